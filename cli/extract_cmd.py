"""``caa-bake extract``: compute CAA vectors and cache them under ``vectors/``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caa_bake.core import CaaBakeError
from caa_bake.data import CAA_BEHAVIORS
from cli.common import DtypeOpt, ModelOpt, QuietOpt, RevisionOpt, apply_quiet, say

__all__ = ["register"]


def extract(
    behavior: Annotated[
        list[str] | None,
        typer.Option("--behavior", "-b", help="Behavior name (repeatable); see `datasets list`."),
    ] = None,
    all_behaviors: Annotated[
        bool,
        typer.Option("--all-behaviors", help="The 7 CAA behaviors, then normalize them together."),
    ] = False,
    layers: Annotated[
        str, typer.Option("--layers", "-l", help="13, 0-29, 10,12,14 or all.")
    ] = "13",
    model: ModelOpt = None,
    revision: RevisionOpt = None,
    dataset: Annotated[
        Path | None,
        typer.Option(
            "--dataset",
            help="Your own JSON/JSONL of question + matching/non-matching answers; registered "
            "in the workspace as --behavior NAME (default: the file's stem).",
        ),
    ] = None,
    test_dataset: Annotated[
        Path | None,
        typer.Option(
            "--test-dataset",
            help="A/B test items of the --dataset behavior (else a seeded fifth of --dataset, "
            "for files of 50+ pairs).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Pairs per pass.")] = 16,
    dtype: DtypeOpt = "auto",
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, or auto.")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Re-extract even if cached.")] = False,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Allow pickle .bin weights (can run code).")
    ] = False,
    keep_activations: Annotated[
        bool,
        typer.Option(
            "--keep-activations",
            help="Also keep every pair's two activations at these layers (for `analyze pca`).",
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Extract CAA vectors: mean(matching - non-matching) after block L at the answer letter."""
    from caa_bake.steering import ExtractJob, run_extract_job  # torch/transformers: lazily

    apply_quiet(quiet)
    names = list(CAA_BEHAVIORS) if all_behaviors else list(behavior or [])
    if not names and dataset is None:
        raise CaaBakeError("name a behavior (--behavior B), --all-behaviors, or --dataset PATH")
    if dataset is not None and len(names) > 1:
        raise CaaBakeError("--dataset gives one behavior; pass at most one --behavior as its name")
    job = ExtractJob(
        behaviors=names,
        dataset=dataset,
        test_dataset=test_dataset,
        layers=layers,
        model=model,
        revision=revision,
        batch_size=batch_size,
        dtype=dtype,
        device=device,
        force=force,
        allow_pickle=allow_pickle,
        normalize=all_behaviors,
        keep_activations=keep_activations,
    )
    for line in run_extract_job(job, status=say):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add ``extract`` to ``app``."""
    app.command("extract")(extract)
