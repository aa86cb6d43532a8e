"""Run folders of ``generate`` / ``judge``: a ``run.json`` and append-only JSONL row files.

A row is one JSON object on one line, written with a single ``write`` and flushed to disk
before the next one starts, so a killed run leaves at most a torn last line. Reading drops
that line (and the writer cuts it off before appending), so a rerun resumes exactly after the
last whole row. ``run.json`` is written atomically when the folder is created and later
compared with the settings of a resumed run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from caa_bake.core import CaaBakeError, atomic_dir, atomic_file, results_dir

__all__ = ["RowFile", "read_rows", "resolve_run", "run_folder", "write_json"]

RUN_FILE = "run.json"


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _whole_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The whole rows of ``path`` and the byte length they occupy (a torn tail excluded)."""
    if not path.is_file():
        return [], 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    rows = []
    for number, line in enumerate(data[:end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise CaaBakeError(f"{path}: line {number} is not JSON (edited by hand?)") from None
        if not isinstance(row, dict):
            raise CaaBakeError(f"{path}: line {number} is not a JSON object")
        rows.append(row)
    return rows, end


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every whole row of a JSONL file (none when it does not exist)."""
    return _whole_lines(path)[0]


class RowFile:
    """An append-only JSONL file of rows keyed by ``row["id"]``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        rows, self._end = _whole_lines(self.path)
        self.done: dict[str, dict[str, Any]] = {str(r.get("id")): r for r in rows}
        self._fh: IO[bytes] | None = None
        self.written = 0

    def __enter__(self) -> RowFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, row: dict[str, Any]) -> None:
        """Write one row whole and flush it to disk."""
        if self._fh is None:
            self._fh = open(self.path, "ab")  # noqa: SIM115 - closed in close()
            if self._fh.tell() != self._end:  # cut a torn last line off before appending
                self._fh.truncate(self._end)
        line = json.dumps(row, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n"
        self._fh.write(line)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._end += len(line)
        self.done[str(row["id"])] = row
        self.written += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def resolve_run(run: str | Path) -> Path:
    """A run given as a folder path, or as a name under ``results/``; must exist."""
    path = Path(run).expanduser()
    if path.is_dir():
        return path
    named = results_dir() / str(run)
    if named.is_dir():
        return named
    raise CaaBakeError(f"no run folder '{run}' (neither a folder nor results/{run})")


def _differences(old: dict[str, Any], new: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if old.get(k) != new.get(k)]


@contextlib.contextmanager
def run_folder(
    folder: Path,
    manifest: dict[str, Any],
    *,
    must_match: tuple[str, ...],
    rows_name: str,
    force: bool = False,
) -> Iterator[Path]:
    """The run folder, created whole (with ``run.json``) or reopened to resume.

    A folder that exists must have been made with the same ``must_match`` settings (else one
    clear line; ``force`` starts it afresh). A folder created here that ends with an error
    before its first row is removed again: a failed start leaves nothing behind.
    """
    folder = Path(folder)
    created = False
    if folder.exists() and force:
        shutil.rmtree(folder)
    if folder.exists():
        record = folder / RUN_FILE
        if not record.is_file():
            raise CaaBakeError(f"{folder} exists but is not a run folder (no {RUN_FILE})")
        old = json.loads(record.read_text(encoding="utf-8"))
        changed = _differences(old, manifest, must_match)
        if changed:
            raise CaaBakeError(
                f"run {folder} was made with other settings ({', '.join(changed)} differ); "
                "pass another --run, or --force to start it afresh"
            )
    else:
        with atomic_dir(folder) as tmp:
            write_json(tmp / RUN_FILE, manifest)
        created = True
    try:
        yield folder
    except BaseException:
        rows = folder / rows_name
        if created and (not rows.exists() or rows.stat().st_size == 0):
            shutil.rmtree(folder, ignore_errors=True)
        raise
