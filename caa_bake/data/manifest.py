"""The committed list of dataset files: where each lands, its pinned upstream URL, its sha256.

The manifest is ``datasets/manifest.json`` in the repository. A wheel carries it as
``caa_bake/_manifest.json`` (pyproject force-includes it), so the packaged copy is tried
first, then the repository one (editable installs and a plain checkout).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import caa_bake
from caa_bake.core import CaaBakeError

__all__ = ["ManifestEntry", "load_manifest", "manifest_path"]

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ManifestEntry:
    """One file to pull.

    ``path`` is relative to the datasets dir (and to a data mirror), in POSIX form, e.g.
    ``caa/generate/refusal/generate_dataset.json``.
    """

    path: str
    url: str
    sha256: str
    size: int


def _candidates() -> list[Path]:
    package_dir = Path(caa_bake.__file__).resolve().parent
    return [package_dir / "_manifest.json", package_dir.parent / "datasets" / "manifest.json"]


def manifest_path() -> Path:
    """The manifest in use: the packaged copy if present, else the repository's."""
    for candidate in _candidates():
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in _candidates())
    raise CaaBakeError(f"dataset manifest not found (tried {tried}); reinstall caa-bake")


def _entry(raw: Any, index: int, where: Path) -> ManifestEntry:
    def bad(what: str) -> CaaBakeError:
        return CaaBakeError(f"broken dataset manifest {where}: file entry {index}: {what}")

    if not isinstance(raw, dict):
        raise bad("not an object")
    path, url, sha, size = (raw.get(k) for k in ("path", "url", "sha256", "size"))
    if not isinstance(path, str) or not path:
        raise bad("missing 'path'")
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or "\\" in path:
        raise bad(f"unsafe path '{path}'")
    if not isinstance(url, str) or not url.startswith("https://"):
        raise bad("'url' must be an https:// URL")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise bad("'sha256' must be 64 lowercase hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise bad("'size' must be a non-negative integer")
    return ManifestEntry(path=path, url=url, sha256=sha, size=size)


def load_manifest(path: Path | None = None) -> list[ManifestEntry]:
    """Read and validate the manifest (``path`` or :func:`manifest_path`)."""
    where = path if path is not None else manifest_path()
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CaaBakeError(f"cannot read dataset manifest {where}: {exc}") from exc
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not files:
        raise CaaBakeError(f"broken dataset manifest {where}: no 'files' list")
    entries = [_entry(raw, i, where) for i, raw in enumerate(files)]
    paths = [e.path for e in entries]
    if len(set(paths)) != len(paths):
        raise CaaBakeError(f"broken dataset manifest {where}: duplicate paths")
    return entries
