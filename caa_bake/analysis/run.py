"""What every ``caa-bake analyze`` command shares: the run folder, written whole or not at all,
the provenance it records (command, versions, model and vector hashes) and the vector files.

A run folder ``results/<run>/`` is built in a hidden temporary folder beside it and renamed
into place only when every file has been written (:func:`caa_bake.core.atomic_dir`): a
failure or a ``kill -9`` leaves no half-written run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caa_bake import __version__
from caa_bake.core import CaaBakeError, atomic_dir, file_sha256, results_dir
from caa_bake.data import check_behavior
from caa_bake.models import ModelRef
from caa_bake.steering import SteeringVector, vector_path

__all__ = [
    "AnalysisRun",
    "check_layers_in",
    "load_vector",
    "provenance",
    "resolve_behaviors",
    "run_target",
    "vector_record",
    "write_csv_rows",
    "write_json",
    "writing_run",
]

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class AnalysisRun:
    """A finished analysis: its folder, the files in it and a few summary lines."""

    folder: Path
    files: list[Path]
    summary: list[str] = field(default_factory=list)


def run_target(run: str | None, prefix: str, slug: str, *, force: bool) -> Path:
    """``results/<run>/`` (default ``<prefix>-<model slug>-<UTC time>``), checked up front:
    a valid name, and not an existing non-empty folder unless ``force``."""
    name = run or f"{prefix}-{slug}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    if not _RUN_NAME.match(name):
        raise CaaBakeError(f"run name {name!r} must use letters, digits, '.', '_' or '-'")
    folder = results_dir() / name
    if folder.exists() and not folder.is_dir():
        raise CaaBakeError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise CaaBakeError(f"{folder} already holds results; pick another --run or pass --force")
    return folder


@contextlib.contextmanager
def writing_run(folder: Path, *, force: bool) -> Iterator[Path]:
    """A temporary folder that becomes ``folder`` once the block finishes without error."""
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()  # an empty folder (made by hand) is no result to keep
    with atomic_dir(folder, overwrite=force) as tmp:
        yield tmp


def resolve_behaviors(names: Sequence[str], has_file: Callable[[str], bool]) -> list[str]:
    """Canonical behavior names, in order, without repeats; a name that is no known behavior
    is accepted when ``has_file(name)`` (a vector of a custom ``--dataset``), else refused."""
    out: list[str] = []
    for name in names:
        try:
            canonical = check_behavior(name)
        except CaaBakeError:
            if not (_RUN_NAME.match(name) and has_file(name)):
                raise
            canonical = name
        if canonical not in out:
            out.append(canonical)
    if not out:
        raise CaaBakeError("name a behavior (--behavior B) or pass --all-behaviors")
    return out


def provenance(ref: ModelRef, **extra: Any) -> dict[str, Any]:
    """The command line, versions and the model's identity, plus ``extra``."""
    import torch
    import transformers

    return {
        "tool": f"caa-bake {__version__}",
        "command": " ".join(["caa-bake", *sys.argv[1:]]),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "model": {
            "model_id": ref.model_id,
            "path": str(ref.path),
            "revision": ref.revision,
            "weights_fingerprint": ref.weights_fingerprint,
        },
        **extra,
    }


def load_vector(
    ref: ModelRef, behavior: str, *, normalized: bool = False
) -> tuple[SteeringVector, Path]:
    """The cached vector file of ``behavior`` for ``ref`` (analysis never extracts)."""
    path = vector_path(ref.slug, behavior, normalized=normalized)
    if not path.is_file():
        how = "--all-behaviors" if normalized else f"--behavior {behavior}"
        raise CaaBakeError(
            f"no {'normalized ' if normalized else ''}vector of '{behavior}' for model "
            f"{ref.model_id} ({path}); run `caa-bake extract {how} --layers all` first"
        )
    vector = SteeringVector.load(path)
    if vector.metadata.get("weights_fingerprint") not in (None, ref.weights_fingerprint):
        raise CaaBakeError(
            f"{path} was extracted from other weights than {ref.model_id}'s; "
            f"re-extract it with `caa-bake extract --behavior {behavior} --force`"
        )
    return vector, path


def check_layers_in(what: str, have: Sequence[int], layers: Sequence[int], fix: str) -> None:
    """One clear error when ``layers`` are not all among ``have``."""
    missing = [layer for layer in layers if layer not in have]
    if missing:
        listed = ", ".join(str(x) for x in have) or "none"
        raise CaaBakeError(
            f"{what} has no layer {', '.join(str(x) for x in missing)} (it has: {listed}); {fix}"
        )


def vector_record(vector: SteeringVector, path: Path, layers: Sequence[int]) -> dict[str, Any]:
    """What a result records about a vector file: its hash, the used layers' hashes, origin."""
    meta = vector.metadata
    return {
        "file": str(path),
        "file_sha256": file_sha256(path),
        "layer_sha256": {str(layer): vector.sha256(layer) for layer in layers},
        "behavior": meta.get("behavior"),
        "dataset_sha256": meta.get("dataset_sha256"),
        "dtype": meta.get("dtype"),
        "normalization": "none" if meta.get("normalization", "none") == "none" else "paper",
    }


def write_json(path: Path, payload: Any) -> Path:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_csv_rows(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """A CSV whose columns are the first row's keys."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return path
