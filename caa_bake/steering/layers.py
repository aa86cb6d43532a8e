"""Parse and check layer selections such as ``13``, ``0-29``, ``10,12,14`` or ``all``."""

from __future__ import annotations

from caa_bake.core import CaaBakeError

__all__ = ["check_layer", "parse_layers"]


def check_layer(layer: int, n_layers: int) -> int:
    """``layer`` if it is a block index of a model with ``n_layers`` blocks, else a clear error."""
    if not 0 <= layer < n_layers:
        raise CaaBakeError(
            f"layer {layer} is out of range: the model has {n_layers} layers (0-{n_layers - 1})"
        )
    return layer


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """Sorted unique 0-based layers from ``spec`` (``all``, ``N``, ``A-B``, comma lists)."""
    text = spec.strip().lower()
    if text == "all":
        return list(range(n_layers))
    layers: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo_text, _, hi_text = part.partition("-")
                lo, hi = int(lo_text), int(hi_text)
                if lo > hi:
                    raise CaaBakeError(f"layer range {part!r} is empty (start > end)")
                chosen = range(lo, hi + 1)
            else:
                chosen = range(int(part), int(part) + 1)
        except ValueError:
            raise CaaBakeError(
                f"cannot read layers {spec!r}: use N, A-B, a comma list, or 'all'"
            ) from None
        for layer in chosen:
            layers.add(check_layer(layer, n_layers))
    if not layers:
        raise CaaBakeError(f"no layers in {spec!r}")
    return sorted(layers)
