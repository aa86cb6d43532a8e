"""caa-bake: turn CAA steering vectors into ordinary model weights."""

from __future__ import annotations

__all__ = ["CaaBakeError", "__version__"]

__version__ = "0.1.0"

from caa_bake.core import CaaBakeError
