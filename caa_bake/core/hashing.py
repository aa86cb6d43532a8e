"""sha256 of files, streamed (datasets, GGUF files, checkpoints)."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_sha256"]


def file_sha256(path: Path, *, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
