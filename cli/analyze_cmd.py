"""``caa-bake analyze similarity|pca|project``: look inside the vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caa_bake.data import CAA_BEHAVIORS
from cli.common import DtypeOpt, ModelOpt, QuietOpt, apply_quiet, say

__all__ = ["app"]

app = typer.Typer(
    help="Cosine similarities, PCA of the contrast activations, per-token projections.",
    no_args_is_help=True,
)

BehaviorOpt = Annotated[
    list[str] | None, typer.Option("--behavior", "-b", help="Behavior (repeatable).")
]
AllOpt = Annotated[bool, typer.Option("--all-behaviors", help="The 7 CAA behaviors.")]
RunOpt = Annotated[
    str | None,
    typer.Option("--run", help="Run name: results/<run>/ (default: <command>-<model>-<time>)."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing run folder.")]


def _behaviors(behavior: list[str] | None, all_behaviors: bool) -> list[str]:
    return list(CAA_BEHAVIORS) if all_behaviors else list(behavior or [])


def _report(folder: Path, files: list[Path], summary: list[str]) -> None:
    for line in summary:
        typer.echo(line)
    for path in files:
        typer.echo(f"wrote {path}")


@app.command("similarity")
def similarity_cmd(
    behavior: BehaviorOpt = None,
    all_behaviors: AllOpt = False,
    layers: Annotated[
        str | None,
        typer.Option(
            "--layers",
            "-l",
            help="Layers to compare, e.g. all or 0-29 (default: every layer "
            "all the vector files hold).",
        ),
    ] = None,
    layer: Annotated[
        int | None,
        typer.Option("--layer", help="Layer of the behavior x behavior matrix (default: middle)."),
    ] = None,
    model: ModelOpt = None,
    compare_model: Annotated[
        str | None,
        typer.Option(
            "--compare-model",
            help="A second model of the same hidden size (e.g. a finetuned checkpoint) whose "
            "vectors are compared layer by layer.",
        ),
    ] = None,
    normalized: Annotated[
        bool, typer.Option("--normalized", help="Read the normalized vector files.")
    ] = False,
    run: RunOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Cosine similarity across layers, across behaviors at one layer, and across models."""
    from caa_bake.analysis import SimilarityJob, run_similarity_job

    apply_quiet(quiet)
    job = SimilarityJob(
        behaviors=_behaviors(behavior, all_behaviors),
        layers=layers,
        layer=layer,
        model=model,
        compare_model=compare_model,
        normalized=normalized,
        run=run,
        force=force,
    )
    result = run_similarity_job(job, status=say)
    _report(result.folder, result.files, result.summary)


@app.command("pca")
def pca_cmd(
    behavior: BehaviorOpt = None,
    all_behaviors: AllOpt = False,
    layers: Annotated[
        str | None,
        typer.Option(
            "--layers", "-l", help="Layers, e.g. 0,6,13,20 (default: up to 8 of the kept ones)."
        ),
    ] = None,
    center_letters: Annotated[
        bool,
        typer.Option(
            "--center-letters",
            help="Subtract each answer letter's mean activation first (hides the letter offset).",
        ),
    ] = False,
    model: ModelOpt = None,
    run: RunOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """PCA of the kept per-pair activations (extract --keep-activations), per layer."""
    from caa_bake.analysis import PcaJob, run_pca_job

    apply_quiet(quiet)
    job = PcaJob(
        behaviors=_behaviors(behavior, all_behaviors),
        layers=layers,
        center_letters=center_letters,
        model=model,
        run=run,
        force=force,
    )
    result = run_pca_job(job, status=say)
    _report(result.folder, result.files, result.summary)


@app.command("project")
def project_cmd(
    behavior: Annotated[str, typer.Option("--behavior", "-b", help="The vector's behavior.")],
    layer: Annotated[int, typer.Option("--layer", "-l", help="Decoder block (0-based).")],
    prompt: Annotated[
        str | None, typer.Option("--prompt", help="A user message to project.")
    ] = None,
    item: Annotated[
        int | None, typer.Option("--item", help="Item N of the behavior's test split instead.")
    ] = None,
    answer: Annotated[
        str, typer.Option("--answer", help="Assistant prefix after the prompt, e.g. '(A)'.")
    ] = "",
    baked: Annotated[
        list[Path] | None,
        typer.Option("--baked", help="A baked checkpoint folder to compare (repeatable)."),
    ] = None,
    model: ModelOpt = None,
    dtype: DtypeOpt = "auto",
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, or auto.")] = "auto",
    run: RunOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Each token's projection on the unit vector at layer L (base and baked models)."""
    from caa_bake.analysis import ProjectJob, run_project_job

    apply_quiet(quiet)
    job = ProjectJob(
        behavior=behavior,
        layer=layer,
        prompt=prompt,
        item=item,
        answer=answer,
        model=model,
        baked=tuple(p.expanduser() for p in baked or []),
        dtype=dtype,
        device=device,
        run=run,
        force=force,
    )
    result = run_project_job(job, status=say)
    _report(result.folder, result.files, result.summary)
