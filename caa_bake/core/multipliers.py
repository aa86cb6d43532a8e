"""``--mults``: the multipliers of ``eval``, ``sweep`` and ``generate``, read from a comma list."""

from __future__ import annotations

import math

from caa_bake.core.errors import CaaBakeError

__all__ = ["parse_multipliers"]


def parse_multipliers(text: str, *, keep_order: bool = False) -> list[float]:
    """``"-1,0,1"`` -> ``[-1.0, 0.0, 1.0]``: finite floats, ``-0`` read as ``0``.

    By default sorted and de-duplicated (``eval`` / ``sweep`` tabulate by value). With
    ``keep_order`` the given order is kept and a value given twice is an error (``generate``
    writes its rows in that order).
    """
    values: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise CaaBakeError(
                f"cannot read multipliers {text!r}: use numbers separated by commas, e.g. -1,0,1"
            ) from None
        if not math.isfinite(value):
            raise CaaBakeError(f"multiplier must be a finite number, got {part}")
        value += 0.0  # -0.0 -> 0.0
        if value in values:
            if keep_order:
                raise CaaBakeError(f"multiplier {part} is given twice in --mults {text!r}")
            continue
        values.append(value)
    if not values:
        raise CaaBakeError("no multipliers given (e.g. --mults -1,0,1)")
    return values if keep_order else sorted(values)
