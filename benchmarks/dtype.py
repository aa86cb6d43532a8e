"""bfloat16 vs float32 on this machine: vector agreement, p_match agreement, speed.

In one process, for each dtype in turn (float32 first, the reference), the embedded model
(or ``--model``) is loaded in that dtype and

(a) the raw CAA vectors of the 7 behaviors are extracted at ``--layers`` from the first
    ``--pairs`` generate pairs of each behavior (the same pairs for both dtypes);
(b) the 7 A/B test tasks run through lm-eval (``--limit`` items each) unsteered and with
    the reference-position hooks at ``--eval-layer`` x ``--mults``, each dtype steering with
    its own paper-normalized vectors (the end-to-end effect of the dtype);
(c) wall times are taken around both.

It prints the cosine of the bf16 and fp32 vectors per behavior and layer, |Δp_match| per
behavior and multiplier (task mean and the largest per-item difference), the change of the
steering effect p(+m) - p(-m), and the speed ratios. A half-precision dtype this CPU only
emulates is allowed here (``CAA_BAKE_ALLOW_EMULATED_DTYPE=1``) so that it can be measured.

    .venv/bin/python -m benchmarks.dtype [--pairs 8] [--limit 3] [--layers 5,10,13,18,25]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass, field

import torch

from benchmarks.measure import measure
from caa_bake.data.behaviors import CAA_BEHAVIORS
from caa_bake.data.datasets import load_pairs
from caa_bake.evaluation.common import make_lm
from caa_bake.evaluation.reference_hooks import steer_from_tail, steering_tail
from caa_bake.evaluation.tasks import SampleValue, ab_task, prompt_setup, run_tasks
from caa_bake.models.dtypes import (
    ALLOW_EMULATED_ENV,
    cpu_has_native,
    dtype_name,
    parse_dtype,
    resolve_dtype,
)
from caa_bake.models.loading import load_model, resolve_model
from caa_bake.steering.extract import extract_vectors
from caa_bake.steering.vector import SteeringVector, normalize_vectors


@dataclass
class DtypeRun:
    """What one dtype produced, and how long it took."""

    vectors: dict[str, SteeringVector] = field(default_factory=dict)
    extract_s: dict[str, float] = field(default_factory=dict)
    samples: dict[tuple[str, float], list[SampleValue]] = field(default_factory=dict)
    p_match: dict[tuple[str, float], float] = field(default_factory=dict)
    eval_s: float = 0.0
    eval_items: int = 0


def _run(args: argparse.Namespace, dtype: torch.dtype, layers: list[int]) -> DtypeRun:
    ref = resolve_model(args.model)
    model, tokenizer = load_model(ref, dtype=resolve_dtype(dtype, "cpu"))
    out = DtypeRun()
    for behavior in CAA_BEHAVIORS:
        pairs = load_pairs(behavior, "generate")[: args.pairs]
        with measure() as m:
            result = extract_vectors(
                model, tokenizer, pairs, layers, batch_size=args.batch_size, desc=behavior
            )
        out.extract_s[behavior] = m.wall_s
        out.vectors[behavior] = SteeringVector(result.vectors, {"dtype": dtype_name(dtype)})
        print(f"  {dtype_name(dtype)} extract {behavior}: {m.wall_s:.1f} s", file=sys.stderr)
    normalized = normalize_vectors(out.vectors)
    setup = prompt_setup(tokenizer, model.config)
    tail = steering_tail(tokenizer, setup.style)
    tasks = [ab_task(b) for b in CAA_BEHAVIORS]
    lm = make_lm(model, tokenizer, args.eval_batch_size)
    for mult in [0.0, *args.mults]:
        with measure() as m:
            if mult == 0.0:
                results = run_tasks(lm, tasks, setup, limit=args.limit)
            else:
                for behavior, task in zip(CAA_BEHAVIORS, tasks, strict=True):
                    delta = {args.eval_layer: normalized[behavior][args.eval_layer] * mult}
                    with steer_from_tail(model, delta, tail):
                        results = run_tasks(lm, [task], setup, limit=args.limit)
                    _store(out, behavior, mult, results[task])
        if mult == 0.0:
            for behavior, task in zip(CAA_BEHAVIORS, tasks, strict=True):
                _store(out, behavior, mult, results[task])
        out.eval_s += m.wall_s
        out.eval_items += args.limit * len(tasks)
        print(f"  {dtype_name(dtype)} eval m={mult:g}: {m.wall_s:.1f} s", file=sys.stderr)
    return out


def _store(out: DtypeRun, behavior: str, mult: float, result: object) -> None:
    samples = sorted(result.samples, key=lambda s: s.doc_id)  # type: ignore[attr-defined]
    out.samples[(behavior, mult)] = samples
    out.p_match[(behavior, mult)] = float(result.metrics["p_match"])  # type: ignore[attr-defined]


def _report(args: argparse.Namespace, layers: list[int], ref: DtypeRun, half: DtypeRun) -> None:
    name = dtype_name(args.half)
    print(f"\n(a) cosine({name} vector, float32 vector), {args.pairs} pairs per behavior")
    print(f"{'behavior':<28}" + "".join(f"{'L' + str(layer):>10}" for layer in layers))
    worst = 1.0
    for behavior in CAA_BEHAVIORS:
        cells = []
        for layer in layers:
            a, b = ref.vectors[behavior][layer], half.vectors[behavior][layer]
            cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
            worst = min(worst, cos)
            cells.append(f"{cos:>10.5f}")
        print(f"{behavior:<28}" + "".join(cells))
    print(f"lowest cosine: {worst:.5f}")

    mults = [0.0, *args.mults]
    print(f"\n(b) p_match, {args.limit} items per behavior, hooks at layer {args.eval_layer}")
    print(f"{'behavior':<28}{'mult':>6}{'fp32':>9}{name:>10}{'|Δ|':>9}{'max item |Δ|':>14}")
    deltas, item_deltas = [], []
    for behavior in CAA_BEHAVIORS:
        for mult in mults:
            p_ref, p_half = ref.p_match[(behavior, mult)], half.p_match[(behavior, mult)]
            per_item = [
                abs(x.value - y.value)
                for x, y in zip(
                    ref.samples[(behavior, mult)], half.samples[(behavior, mult)], strict=True
                )
            ]
            deltas.append(abs(p_ref - p_half))
            item_deltas += per_item
            print(
                f"{behavior:<28}{mult:>6g}{p_ref:>9.4f}{p_half:>10.4f}"
                f"{abs(p_ref - p_half):>9.4f}{max(per_item):>14.4f}"
            )
    print(
        f"|Δp_match| over behavior x mult: mean {statistics.mean(deltas):.4f}, "
        f"max {max(deltas):.4f}; per item: mean {statistics.mean(item_deltas):.4f}, "
        f"max {max(item_deltas):.4f}"
    )
    if len(args.mults) >= 2:
        lo, hi = min(args.mults), max(args.mults)
        effects = [
            (
                ref.p_match[(b, hi)] - ref.p_match[(b, lo)],
                half.p_match[(b, hi)] - half.p_match[(b, lo)],
            )
            for b in CAA_BEHAVIORS
        ]
        mean_ref = statistics.mean(e[0] for e in effects)
        mean_half = statistics.mean(e[1] for e in effects)
        print(
            f"steering effect p({hi:g}) - p({lo:g}): fp32 mean {mean_ref:+.4f}, "
            f"{name} mean {mean_half:+.4f}, "
            f"max |difference| {max(abs(e[0] - e[1]) for e in effects):.4f}"
        )

    ext_ref, ext_half = sum(ref.extract_s.values()), sum(half.extract_s.values())
    n_pairs = args.pairs * len(CAA_BEHAVIORS)
    print("\n(c) speed (same process, same inputs)")
    print(f"{'phase':<34}{'fp32 s':>10}{name + ' s':>12}{'fp32 / ' + name:>16}")
    print(
        f"{'extraction, per behavior (' + str(args.pairs) + ' pairs)':<34}"
        f"{ext_ref / len(CAA_BEHAVIORS):>10.2f}{ext_half / len(CAA_BEHAVIORS):>12.2f}"
        f"{ext_ref / ext_half:>16.2f}x"
    )
    print(
        f"{'extraction, per pair':<34}{ext_ref / n_pairs:>10.3f}{ext_half / n_pairs:>12.3f}"
        f"{ext_ref / ext_half:>16.2f}x"
    )
    per100_ref = ref.eval_s / ref.eval_items * 100
    per100_half = half.eval_s / half.eval_items * 100
    print(
        f"{'eval, per 100 items':<34}{per100_ref:>10.1f}{per100_half:>12.1f}"
        f"{per100_ref / per100_half:>16.2f}x"
    )
    print("(a ratio above 1x means the half-precision dtype is faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2")
    parser.add_argument("--half", default="bfloat16", help="the dtype compared with float32")
    parser.add_argument("--pairs", type=int, default=8, help="generate pairs per behavior")
    parser.add_argument("--layers", default="5,10,13,18,25")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=3, help="A/B test items per behavior")
    parser.add_argument("--eval-layer", type=int, default=13)
    parser.add_argument("--mults", default="-1,1")
    parser.add_argument("--eval-batch-size", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault(ALLOW_EMULATED_ENV, "1")
    half = parse_dtype(args.half)
    if half is None or half == torch.float32:
        parser.error("--half must be bfloat16 or float16")
    args.half = half
    args.mults = [float(x) for x in args.mults.split(",") if float(x) != 0.0]
    layers = sorted({int(x) for x in args.layers.split(",")} | {args.eval_layer})
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU "
        f"{torch.backends.cpu.get_cpu_capability()}, native {dtype_name(args.half)}: "
        f"{cpu_has_native(args.half)}; model {args.model or 'smollm2-135m-instruct'}; "
        f"{args.pairs} pairs x 7 behaviors, layers {layers}; eval {args.limit} items x 7 "
        f"behaviors x mults {[0.0, *args.mults]} at L{args.eval_layer}"
    )
    ref = _run(args, torch.float32, layers)
    half_run = _run(args, args.half, layers)
    _report(args, layers, ref, half_run)


if __name__ == "__main__":
    main()
