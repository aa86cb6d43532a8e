"""Where caa-bake reads and writes.

Outputs live in a *workspace* (default: the current directory, or ``$CAA_BAKE_HOME``):
``datasets/``, ``vectors/``, ``exported_models/`` and ``results/``. Each folder can be
moved on its own with an environment variable. Converted models are cached under
``$CAA_BAKE_CACHE`` (default ``$XDG_CACHE_HOME/caa-bake`` or ``~/.cache/caa-bake``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "cache_dir",
    "datasets_dir",
    "exports_dir",
    "results_dir",
    "vectors_dir",
    "workspace",
]


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def workspace() -> Path:
    """The folder that holds datasets/, vectors/, exported_models/ and results/."""
    return _env_path("CAA_BAKE_HOME") or Path.cwd()


def datasets_dir() -> Path:
    """Pulled datasets (``$CAA_BAKE_DATASETS_DIR`` or ``<workspace>/datasets``)."""
    return _env_path("CAA_BAKE_DATASETS_DIR") or workspace() / "datasets"


def vectors_dir() -> Path:
    """Extracted vectors (``$CAA_BAKE_VECTORS_DIR`` or ``<workspace>/vectors``)."""
    return _env_path("CAA_BAKE_VECTORS_DIR") or workspace() / "vectors"


def exports_dir() -> Path:
    """Baked checkpoints (``$CAA_BAKE_EXPORTS_DIR`` or ``<workspace>/exported_models``)."""
    return _env_path("CAA_BAKE_EXPORTS_DIR") or workspace() / "exported_models"


def results_dir() -> Path:
    """Evaluation results (``$CAA_BAKE_RESULTS_DIR`` or ``<workspace>/results``)."""
    return _env_path("CAA_BAKE_RESULTS_DIR") or workspace() / "results"


def cache_dir() -> Path:
    """Converted-model cache (``$CAA_BAKE_CACHE``, else the XDG cache folder)."""
    explicit = _env_path("CAA_BAKE_CACHE")
    if explicit is not None:
        return explicit
    xdg = _env_path("XDG_CACHE_HOME") or Path.home() / ".cache"
    return xdg / "caa-bake"
