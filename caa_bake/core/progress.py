"""Progress bars that the whole tool silences at once (``--quiet`` / ``CAA_BAKE_QUIET=1``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

__all__ = ["is_quiet", "progress", "set_quiet"]

T = TypeVar("T")
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence (or re-enable) every progress bar and status line, transformers' included."""
    global _quiet
    _quiet = quiet
    from transformers.utils import logging as hf_logging

    if quiet:
        hf_logging.disable_progress_bar()
    else:
        hf_logging.enable_progress_bar()


def is_quiet() -> bool:
    return _quiet or os.environ.get("CAA_BAKE_QUIET", "") not in ("", "0")


def progress(
    items: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it"
) -> Iterator[T]:
    """Wrap ``items`` in a tqdm bar on stderr unless quiet."""
    yield from tqdm(items, desc=desc, total=total, unit=unit, disable=is_quiet(), leave=False)
