"""Finetuning throughput: one rank against two ranks on the same data, in one run.

Runs ``caa-bake finetune`` (the library call behind the command, ranks spawned as usual)
twice on the same model and the same first ``--samples`` items of the shuffled generate
split: once with one CPU rank, once with two. Both use the same per-rank batch (paper: 1),
so the two-rank run takes half as many optimizer steps. Each rank gets an equal share of
the CPU threads (one rank: all of them; two ranks: half each). samples/s counts the
training loop only (start-up, which is mostly imports and model loading, is reported
apart); the ratio two/one is printed at the end. ``--batched-single`` adds a third run:
one rank with twice the batch, which takes the same optimizer steps as the two-rank run.

    .venv/bin/python benchmarks/finetune.py [--model M] [--behavior refusal] [--samples 24]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from caa_bake.finetune.plan import FinetuneRequest, cpu_count
from caa_bake.finetune.run import FinetuneResult, run_finetune


def _run(args: argparse.Namespace, ranks: int, batch: int, root: Path) -> FinetuneResult:
    steps = args.samples // (ranks * batch)
    request = FinetuneRequest(
        behavior=args.behavior,
        direction="pos",
        model=args.model,
        cpu_ranks=ranks,
        batch_size=batch,
        zero_stage=args.zero_stage,
        max_steps=steps,
        out=root / f"ranks{ranks}-batch{batch}",
    )
    return run_finetune(request, status=lambda _line: None)


def _row(label: str, result: FinetuneResult) -> str:
    s = result.summary
    return (
        f"{label:<22} {result.spec.world_size:>5} {result.spec.batch_size:>5} "
        f"{result.spec.threads_per_rank:>7} {s.steps:>5} {s.samples:>7} "
        f"{s.init_seconds:>9.1f} {s.train_seconds:>9.1f} {s.samples_per_second:>9.3f} "
        f"{result.wall_seconds:>8.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2")
    parser.add_argument("--behavior", default="refusal")
    parser.add_argument("--samples", type=int, default=24, help="training samples per run")
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--batched-single", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("CAA_BAKE_QUIET", "1")
    if args.samples % 2:
        parser.error("--samples must be even (two ranks split every step)")
    load = os.getloadavg()
    print(
        f"behavior {args.behavior}, {args.samples} samples, ZeRO-{args.zero_stage}, "
        f"{cpu_count()} CPUs, load average before: {load[0]:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="caa-bake-bench-") as tmp:
        root = Path(tmp)
        one = _run(args, 1, 1, root)
        two = _run(args, 2, 1, root)
        runs = [("1 rank", one), ("2 ranks", two)]
        if args.batched_single:
            runs.append(("1 rank, double batch", _run(args, 1, 2, root)))
    print(f"model {one.spec.base['model_id']}")
    print(
        f"{'run':<22} {'ranks':>5} {'batch':>5} {'threads':>7} {'steps':>5} {'samples':>7} "
        f"{'startup_s':>9} {'train_s':>9} {'samples/s':>9} {'wall_s':>8}"
    )
    for label, result in runs:
        print(_row(label, result))
    ratio = two.summary.samples_per_second / one.summary.samples_per_second
    print(f"two ranks / one rank samples/s: {ratio:.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
