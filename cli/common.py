"""Options and output helpers shared by the commands."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from caa_bake.core import is_quiet, set_quiet

__all__ = ["DtypeOpt", "ModelOpt", "QuietOpt", "RevisionOpt", "apply_quiet", "say"]

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or status lines.")]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Hub id, local directory, or 'smollm2-135m-instruct' (default; env CAA_BAKE_MODEL).",
    ),
]

DtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="auto (= float32, measured: BENCHMARKS.md), float32/fp32, bfloat16/bf16 or "
        "float16/fp16. Half precision needs native support on CPU (AMX / AVX512-BF16).",
    ),
]

RevisionOpt = Annotated[
    str | None, typer.Option("--revision", help="Hub revision (branch, tag or commit) to pin.")
]


def apply_quiet(quiet: bool) -> None:
    """Honour ``--quiet`` (or ``CAA_BAKE_QUIET=1``) for caa-bake's and transformers' bars."""
    if quiet or is_quiet():
        set_quiet(True)


def say(message: str) -> None:
    """A status line on stderr, unless quiet. Results go to stdout with print/typer.echo."""
    if not is_quiet():
        print(message, file=sys.stderr, flush=True)
