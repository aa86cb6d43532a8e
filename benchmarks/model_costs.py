"""What a model costs on this machine: load, extraction per pair, A/B evaluation per 100 items.

Each model is measured in turn in one process (the embedded SmolLM2 first, as the yardstick,
then the others), with the same behavior's pairs and test items, so the last column is the
model's cost relative to SmolLM2's on the same machine in the same run:

    .venv/bin/python -m benchmarks.model_costs --model qwen2.5-coder-1.5b-instruct \\
        [--pairs 16] [--items 20] [--behavior refusal] [--layer 13]

- load: ``load_model`` in float32 (from the cached safetensors folder), wall time and the
  process's peak RSS while the model is held;
- extract: :func:`caa_bake.steering.extract.extract_vectors` on the first ``--pairs``
  generate pairs at one layer (what ``caa-bake extract`` runs per behavior), seconds per pair;
- eval: caa-bake's lm-eval model (``make_lm``) on the behavior's A/B test task with
  ``--limit`` items, seconds per 100 items (one warm-up item first, outside the timing).
"""

from __future__ import annotations

import argparse
import gc
import os

import torch

from benchmarks.measure import Measurement, measure
from caa_bake.data.datasets import load_pairs
from caa_bake.evaluation.common import make_lm
from caa_bake.evaluation.tasks import ab_task, prompt_setup, run_tasks
from caa_bake.models import EMBEDDED_MODEL, num_layers
from caa_bake.models.loading import load_model, resolve_model
from caa_bake.steering.extract import extract_vectors


def _costs(name: str, args: argparse.Namespace) -> dict[str, Measurement]:
    ref = resolve_model(name)
    gc.collect()
    with measure() as load_m:
        model, tokenizer = load_model(ref)
    layer = min(args.layer, num_layers(model.config) - 1)
    pairs = load_pairs(args.behavior, "generate")[: args.pairs]
    with measure() as extract_m:
        extract_vectors(model, tokenizer, pairs, [layer], batch_size=args.batch_size)
    setup = prompt_setup(tokenizer, model.config)
    task = ab_task(args.behavior)
    lm = make_lm(model, tokenizer, args.batch_size)
    run_tasks(lm, [task], setup, limit=1)  # lm-eval's first task build out of the timing
    with measure() as eval_m:
        run_tasks(lm, [task], setup, limit=args.items)
    del model, lm
    gc.collect()
    return {"load": load_m, "extract": extract_m, "eval": eval_m}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", action="append", default=[], help="repeatable")
    parser.add_argument("--behavior", default="refusal")
    parser.add_argument("--layer", type=int, default=13)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("CAA_BAKE_QUIET", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    models = [EMBEDDED_MODEL, *(m for m in args.model if m != EMBEDDED_MODEL)]
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32; behavior "
        f"{args.behavior}, {args.pairs} pairs at layer {args.layer}, {args.items} A/B items, "
        f"batch {args.batch_size}",
        flush=True,
    )
    header = f"{'model':30s} {'load s':>7s} {'RSS GB':>7s} {'s/pair':>7s} {'s/100 items':>11s}"
    print(header + f" {'x SmolLM2 (load, pair, items)':>30s}")
    base: dict[str, Measurement] | None = None
    for name in models:
        costs = _costs(name, args)
        base = base or costs
        per_pair = costs["extract"].wall_s / args.pairs
        per_100 = costs["eval"].wall_s / args.items * 100
        rss = max(m.peak_rss_mb for m in costs.values()) / 1024
        ratios = ", ".join(
            f"{costs[k].wall_s / base[k].wall_s:.1f}x" for k in ("load", "extract", "eval")
        )
        print(
            f"{name:30s} {costs['load'].wall_s:7.1f} {rss:7.2f} {per_pair:7.2f} "
            f"{per_100:11.1f} {ratios:>30s}",
            flush=True,
        )


if __name__ == "__main__":
    main()
