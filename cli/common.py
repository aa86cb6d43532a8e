"""Options and output helpers shared by the commands."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from caa_bake.core import CaaBakeError, is_quiet, set_quiet

__all__ = [
    "DatasetOpt",
    "DtypeOpt",
    "ModelOpt",
    "NormalizeWithOpt",
    "QuietOpt",
    "RevisionOpt",
    "TestDatasetOpt",
    "VectorDtypeOpt",
    "apply_quiet",
    "normalize_with",
    "register_dataset",
    "say",
]

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

VectorDtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--vector-dtype",
        help="dtype of the cached vectors to use (e.g. bfloat16 for vectors extracted on a "
        "GPU); default: --dtype. A vector cached in another dtype is re-extracted.",
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


DatasetOpt = Annotated[
    Path | None,
    typer.Option(
        "--dataset",
        help="Your own contrast pairs (JSON list or JSONL of question, answer_matching_behavior, "
        "answer_not_matching_behavior): registered in the workspace as --behavior NAME "
        "(default: the file's stem), then known by that name to every command.",
    ),
]
TestDatasetOpt = Annotated[
    Path | None,
    typer.Option(
        "--test-dataset",
        help="A/B test items for the --dataset behavior (at least 10). Without it a file of "
        "50+ pairs is split (a seeded fifth, at most 50, held out; recorded).",
    ),
]
NormalizeWithOpt = Annotated[
    str | None,
    typer.Option(
        "--normalize-with",
        help="Normalize against these behaviors (comma list) instead of the 7 CAA ones: the "
        "vector gets the mean per-layer norm of their raw vectors.",
    ),
]


def register_dataset(
    behaviors: Sequence[str],
    dataset: Path | None,
    test_dataset: Path | None,
    *,
    need_test: bool = False,
) -> list[str]:
    """With ``--dataset``: validate and register the file under the one ``--behavior`` name
    (or its stem) and return ``[name]``; otherwise ``behaviors`` unchanged.

    ``need_test``: the command scores the test split (eval, sweep); a file without one is
    refused before anything is registered."""
    if dataset is None:
        if test_dataset is not None:
            raise CaaBakeError("--test-dataset needs --dataset FILE (the pairs it belongs to)")
        return list(behaviors)
    from caa_bake.data import prepare_custom

    if len(behaviors) > 1:
        raise CaaBakeError("--dataset gives one behavior; pass at most one --behavior as its name")
    custom = prepare_custom(behaviors[0] if behaviors else None, dataset, test_dataset)
    if need_test and custom.test is None:
        reason = custom.record["split"]["reason"]
        raise CaaBakeError(
            f"custom behavior '{custom.name}' has no test split ({reason}); "
            "add --test-dataset TEST_FILE"
        )
    folder = custom.register()
    split = custom.record["split"]
    say(
        f"custom behavior '{custom.name}' registered in {folder} ({split['generate']} generate, "
        f"{split['test']} test pairs; split: {str(split['rule']).split(':')[0]})"
    )
    return [custom.name]


def normalize_with(text: str | None) -> tuple[str, ...] | None:
    """``--normalize-with a,b`` -> ``("a", "b")`` (checked later, by name)."""
    if text is None:
        return None
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise CaaBakeError("--normalize-with names no behavior (e.g. refusal,sycophancy)")
    return names
