"""``caa-bake eval`` and ``caa-bake sweep``: lm-eval A/B evaluation of steered models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caa_bake.core import CaaBakeError
from caa_bake.data import CAA_BEHAVIORS
from cli.common import (
    DatasetOpt,
    DtypeOpt,
    ModelOpt,
    NormalizeWithOpt,
    QuietOpt,
    TestDatasetOpt,
    VectorDtypeOpt,
    apply_quiet,
    normalize_with,
    register_dataset,
    say,
)

__all__ = ["register"]

BehaviorOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--behavior",
        "-b",
        help="Behavior (repeatable): CAA, anthropic-*, or a registered custom name.",
    ),
]
AllOpt = Annotated[bool, typer.Option("--all-behaviors", help="The 7 CAA behaviors.")]
LimitOpt = Annotated[
    int | None,
    typer.Option(
        "--limit",
        help="At most N items per task (quick runs); MMLU / TruthfulQA: spread evenly "
        "over categories.",
    ),
]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", help="lm-eval batch size (padded prompts per forward).")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, or auto.")]
RunOpt = Annotated[
    str | None,
    typer.Option("--run", help="Run name: results/<run>/ (default: <command>-<model>-<time>)."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Write into an existing run folder.")]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume", help="Continue the interrupted run --run NAME, reusing its finished parts."
    ),
]


def _behaviors(
    behavior: list[str] | None,
    all_behaviors: bool,
    dataset: Path | None = None,
    test_dataset: Path | None = None,
    *,
    need_test: bool = True,
) -> list[str]:
    names = list(CAA_BEHAVIORS) if all_behaviors else list(behavior or [])
    if dataset is not None and all_behaviors:
        raise CaaBakeError("--dataset gives one behavior; it cannot be used with --all-behaviors")
    return register_dataset(names, dataset, test_dataset, need_test=need_test)


def _scores_ab(tasks: str | None) -> bool:
    """Whether ``--tasks`` includes the behaviors' own A/B tasks (the default does)."""
    return tasks is None or any(t.strip() in ("ab", "caa") or t.strip().startswith("caa_ab")
                                for t in tasks.split(","))  # fmt: skip


def eval_command(
    layer: Annotated[int, typer.Option("--layer", "-l", help="Decoder block (0-based).")],
    behavior: BehaviorOpt = None,
    all_behaviors: AllOpt = False,
    dataset: DatasetOpt = None,
    test_dataset: TestDatasetOpt = None,
    normalize_with_: NormalizeWithOpt = None,
    mults: Annotated[str, typer.Option("--mults", help="Multipliers, e.g. -1,0,1.")] = "-1,0,1",
    tasks: Annotated[
        str | None,
        typer.Option(
            "--tasks",
            help="Comma list: ab (each behavior's own A/B task), mmlu, truthfulqa, caa, caa_ab "
            "or task names such as caa_ab_refusal. Default: ab,mmlu,truthfulqa.",
        ),
    ] = None,
    limit: LimitOpt = None,
    model: ModelOpt = None,
    kinds: Annotated[
        str, typer.Option("--kinds", help="Steered variants: baked, hooks or both.")
    ] = "baked,hooks",
    finetuned: Annotated[
        list[Path] | None,
        typer.Option(
            "--finetuned",
            help="A `caa-bake finetune` output folder (repeatable): evaluated alone and with "
            "the vector added at every position. Those in exported_models/ made from --model "
            "are found anyway.",
        ),
    ] = None,
    no_finetuned: Annotated[
        bool,
        typer.Option(
            "--no-finetuned", help="Do not look for finetuned models in exported_models/."
        ),
    ] = False,
    batch_size: BatchOpt = 8,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    vector_dtype: VectorDtypeOpt = None,
    run: RunOpt = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Re-export baked models even if they exist.")
    ] = False,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate the base model, baked models and hook-steered equivalents with lm-eval."""
    from caa_bake.evaluation import EvalJob, parse_multipliers, run_eval_job

    apply_quiet(quiet)
    norm_set, multipliers = normalize_with(normalize_with_), parse_multipliers(mults)
    job = EvalJob(
        behaviors=_behaviors(
            behavior, all_behaviors, dataset, test_dataset, need_test=_scores_ab(tasks)
        ),
        normalize_with=norm_set,
        layer=layer,
        multipliers=multipliers,
        tasks=tasks,
        limit=limit,
        model=model,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        vector_dtype=vector_dtype,
        run=run,
        finetuned=tuple(p.expanduser() for p in finetuned or []),
        discover_finetuned=not no_finetuned,
        kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()),
        rebuild=rebuild,
        force=force,
        resume=resume,
    )
    result = run_eval_job(job, status=say)
    typer.echo((result.folder / "results.md").read_text(encoding="utf-8"))
    for path in result.files:
        typer.echo(f"wrote {path}")
    typer.echo(f"wall time {result.wall_s:.1f} s")


def sweep_command(
    behavior: BehaviorOpt = None,
    all_behaviors: AllOpt = False,
    dataset: DatasetOpt = None,
    test_dataset: TestDatasetOpt = None,
    normalize_with_: NormalizeWithOpt = None,
    layers: Annotated[str, typer.Option("--layers", "-l", help="0-29, 0,2,4 or all.")] = "all",
    mults: Annotated[
        str, typer.Option("--mults", help="Non-zero multipliers, e.g. -1,1.")
    ] = "-1,1",
    positions: Annotated[
        str,
        typer.Option(
            "--positions",
            help="all (what a baked bias does) or reference (from the end of the instruction).",
        ),
    ] = "all",
    limit: LimitOpt = None,
    model: ModelOpt = None,
    batch_size: BatchOpt = 8,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    vector_dtype: VectorDtypeOpt = None,
    run: RunOpt = None,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Layer sweep: Δp_match against layer per multiplier, without exporting checkpoints."""
    from caa_bake.evaluation import SweepJob, parse_multipliers, run_sweep_job

    apply_quiet(quiet)
    norm_set, multipliers = normalize_with(normalize_with_), parse_multipliers(mults)
    job = SweepJob(
        behaviors=_behaviors(behavior, all_behaviors, dataset, test_dataset),
        normalize_with=norm_set,
        layers=layers,
        multipliers=multipliers,
        limit=limit,
        model=model,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        vector_dtype=vector_dtype,
        positions=positions,
        run=run,
        force=force,
        resume=resume,
    )
    result = run_sweep_job(job, status=say)
    typer.echo((result.folder / "sweep.md").read_text(encoding="utf-8"))
    typer.echo(f"best layer: {result.best.get('all')}")
    for path in result.files:
        typer.echo(f"wrote {path}")
    typer.echo(f"wall time {result.wall_s:.1f} s")


def register(app: typer.Typer) -> None:
    """Add ``eval`` and ``sweep`` to ``app``."""
    app.command("eval")(eval_command)
    app.command("sweep")(sweep_command)
