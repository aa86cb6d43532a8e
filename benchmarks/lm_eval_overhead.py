"""The fixed cost of one lm-eval run: with and without lm-eval's environment report.

``caa-bake sweep`` calls lm-eval's ``simple_evaluate`` once per (behavior, layer,
multiplier) and ``eval`` once per variant. Each call used to end with lm-eval's
``add_env_info``, which runs ``torch.utils.collect_env`` (``pip list`` and friends);
``run_tasks`` now replaces it with a versions-only record (``light_env_info``). In one
process, this runs the same tiny evaluation (the embedded model, one A/B task, ``--limit``
items) ``--repeats`` times each way, alternating, and prints the median wall time per call
and the ratio.

    .venv/bin/python -m benchmarks.lm_eval_overhead [--limit 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from collections.abc import Iterator

from benchmarks.measure import measure
from caa_bake.evaluation import tasks as tasks_module
from caa_bake.evaluation.common import load_for_eval, make_lm
from caa_bake.evaluation.tasks import run_tasks
from caa_bake.models import resolve_model


@contextlib.contextmanager
def _lm_eval_default() -> Iterator[None]:
    yield  # leaves lm-eval's own add_env_info in place


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--task", default="caa_ab_refusal")
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    loaded = load_for_eval(resolve_model(args.model))
    lm = make_lm(loaded.model, loaded.tokenizer, 8)
    run_tasks(lm, [args.task], loaded.setup, limit=args.limit)  # warm-up: imports, caches
    light = tasks_module.light_env_info
    times: dict[str, list[float]] = {"lm-eval default": [], "caa-bake (versions only)": []}
    for _ in range(args.repeats):
        for name, patch in (
            ("lm-eval default", _lm_eval_default),
            ("caa-bake (versions only)", light),
        ):
            tasks_module.light_env_info = patch
            try:
                with measure() as m:
                    run_tasks(lm, [args.task], loaded.setup, limit=args.limit)
            finally:
                tasks_module.light_env_info = light
            times[name].append(m.wall_s)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"one run_tasks call: {args.task}, {args.limit} items, {args.model}, float32 CPU")
    for name, value in medians.items():
        runs = ", ".join(f"{v:.2f}" for v in times[name])
        print(f"  {name:26s} median {value:6.2f} s  ({runs})")
    base, ours = medians["lm-eval default"], medians["caa-bake (versions only)"]
    print(f"  ratio {base / ours:.1f}x; saved per call {base - ours:.2f} s")


if __name__ == "__main__":
    main()
