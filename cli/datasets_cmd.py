"""``caa-bake datasets pull|list``."""

from __future__ import annotations

from typing import Annotated

import typer

from caa_bake.core import datasets_dir
from caa_bake.data import SOURCE_ENV, DatasetStatus, inventory, pull
from cli.common import QuietOpt, apply_quiet, say

app = typer.Typer(help="Pull and list the behavior datasets.", no_args_is_help=True)

SourceOpt = Annotated[
    str | None,
    typer.Option(
        "--source",
        "-s",
        help=(
            "A local data mirror (folder with the mirror layout) or an http(s) URL serving "
            f"it, instead of the pinned upstream URLs (env {SOURCE_ENV}; the flag wins)."
        ),
    ),
]


@app.command("pull")
def pull_cmd(source: SourceOpt = None, quiet: QuietOpt = False) -> None:
    """Download every dataset file, verify its sha256, convert the raw Anthropic evals.

    All or nothing: on any failure the datasets folder is left unchanged.
    """
    apply_quiet(quiet)
    say(f"pulling datasets into {datasets_dir()} ...")
    report = pull(source)
    typer.echo(report.summary())


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _where(row: DatasetStatus) -> str:
    root = datasets_dir()
    folders = dict.fromkeys(str(p.parent.relative_to(root)) for p in row.files)
    return ", ".join(folders)


@app.command("list")
def list_cmd() -> None:
    """Show every behavior and A/B eval: item counts and whether (and where) it is present."""
    rows = inventory()
    typer.echo(f"datasets dir: {datasets_dir()}")
    header = ("name", "kind", "generate", "test", "status", "where")
    table = [(r.name, r.kind, _count(r.generate), _count(r.test), r.state, _where(r)) for r in rows]
    widths = [max(len(line[i]) for line in (header, *table)) for i in range(len(header) - 1)]
    for line in (header, *table):
        cells = [
            cell.rjust(w) if i in (2, 3) else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=False))
        ]
        typer.echo("  ".join([*cells, line[-1]]).rstrip())
    problems = [r for r in rows if r.problem]
    for row in problems:
        typer.echo(f"{row.name}: {row.problem}")
    if all(r.state == "missing" for r in rows):
        typer.echo("nothing pulled yet: run `caa-bake datasets pull` (or `--source DIR`)")
