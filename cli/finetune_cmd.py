"""``caa-bake finetune``: the CAA finetuning baseline, data parallel with DeepSpeed ZeRO.

Also runnable as one rank of an external launcher (same options)::

    deepspeed --num_gpus 2 --module cli.finetune_cmd --behavior refusal --direction pos
    torchrun --nproc_per_node 2 -m cli.finetune_cmd --behavior refusal --direction pos
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from caa_bake.core import CaaBakeError
from cli.common import (
    DatasetOpt,
    ModelOpt,
    QuietOpt,
    TestDatasetOpt,
    apply_quiet,
    register_dataset,
    say,
)

__all__ = ["finetune", "main", "register"]


def finetune(
    behavior: Annotated[
        str, typer.Option("--behavior", "-b", help="Behavior whose generate split to train on.")
    ],
    direction: Annotated[
        str,
        typer.Option(
            "--direction", "-d", help="pos: towards the matching answer; neg: the other one."
        ),
    ],
    model: ModelOpt = None,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Hub revision of --model.")
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the data.")] = 1,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate (paper: 1e-4).")] = 1e-4,
    optimizer: Annotated[
        str, typer.Option("--optimizer", help="sgd (as the paper) or adamw.")
    ] = "sgd",
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Samples per rank per step (paper: 1).")
    ] = 1,
    cpu_ranks: Annotated[
        int | None,
        typer.Option("--cpu-ranks", help="Train data-parallel on N CPU processes (gloo)."),
    ] = None,
    gpus: Annotated[
        int | None, typer.Option("--gpus", help="Train data-parallel on N GPUs (nccl).")
    ] = None,
    zero_stage: Annotated[
        int | None,
        typer.Option("--zero-stage", help="DeepSpeed ZeRO stage 0-3 (default 2)."),
    ] = None,
    deepspeed_config: Annotated[
        Path | None,
        typer.Option("--deepspeed-config", help="Your DeepSpeed JSON instead of the shipped one."),
    ] = None,
    lora: Annotated[
        bool, typer.Option("--lora", help="Train a peft LoRA adapter, merged before saving.")
    ] = False,
    lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank.")] = 16,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha", help="LoRA alpha.")] = 32,
    seed: Annotated[int, typer.Option("--seed", help="Shuffling / init seed.")] = 0,
    max_steps: Annotated[
        int | None,
        typer.Option(
            "--max-steps",
            help="Stop after N steps: a seeded sample of the split (the first items of the "
            "shuffled order, the same for pos and neg).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (default: exported_models/<name>)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output.")] = False,
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype",
            help="Training dtype: float32 (= auto). bf16/fp16 weights are refused: SGD updates "
            "at lr 1e-4 fall below their resolution.",
        ),
    ] = "auto",
    dataset: DatasetOpt = None,
    test_dataset: TestDatasetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Finetune on a behavior's A/B answers (the CAA paper's baseline) into a new checkpoint."""
    from caa_bake.finetune import (
        FinetuneRequest,
        launched_externally,
        run_external_rank,
        run_finetune,
    )

    apply_quiet(quiet)
    if dataset is not None and launched_externally():
        raise CaaBakeError(
            "register --dataset before an external launcher starts the ranks (e.g. `caa-bake "
            f"extract --behavior {behavior} --dataset FILE`), then pass --behavior {behavior}"
        )
    register_dataset([behavior], dataset, test_dataset)
    request = FinetuneRequest(
        behavior=behavior,
        direction=direction,
        model=model,
        revision=revision,
        epochs=epochs,
        learning_rate=lr,
        optimizer=optimizer,
        batch_size=batch_size,
        cpu_ranks=cpu_ranks,
        gpus=gpus,
        zero_stage=zero_stage,
        deepspeed_config=deepspeed_config,
        lora=lora,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        seed=seed,
        max_steps=max_steps,
        out=out,
        force=force,
        dtype=dtype,
    )
    if launched_externally():
        result = run_external_rank(request, status=say)
        if result is None:
            return
    else:
        result = run_finetune(request, status=say)
    for line in result.lines():
        typer.echo(line)
    typer.echo(f"finetuned: {result.path}")


def register(app: typer.Typer) -> None:
    """Add ``finetune`` to ``app``."""
    app.command("finetune")(finetune)


def _drop_local_rank(argv: list[str]) -> list[str]:
    """Remove the ``--local_rank=N`` (or ``--local_rank N``) the deepspeed launcher adds."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith(("--local_rank=", "--local-rank=")):
            continue
        elif arg in ("--local_rank", "--local-rank"):
            skip = True
        else:
            kept.append(arg)
    return kept


def main() -> None:
    """``python -m cli.finetune_cmd ...``: the finetune command on its own (for launchers)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(finetune)
    try:
        app(_drop_local_rank(sys.argv[1:]), prog_name="caa-bake finetune")
    except CaaBakeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
