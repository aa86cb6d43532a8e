"""A workspace with cached random vectors for the tiny test models (eval and sweep tests)."""

from __future__ import annotations

from pathlib import Path

import torch

from caa_bake.core.hashing import file_sha256
from caa_bake.data.behaviors import CAA_BEHAVIORS
from caa_bake.data.datasets import dataset_path
from caa_bake.models.loading import resolve_model
from caa_bake.steering.vector import SteeringVector


def linked_datasets(pulled: Path, dest: Path) -> Path:
    """A datasets folder of its own at ``dest`` whose pulled parts are symlinks into
    ``pulled``: custom behaviors registered by a test land in ``dest/custom`` only."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in pulled.iterdir():
        if entry.name != "custom":
            (dest / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return dest


def cached_workspace(ws: Path, model_dir: Path, datasets: Path) -> dict[str, str]:
    """Fill ``ws/vectors`` with random raw vectors (norm ~4) of the 7 behaviors for the model
    in ``model_dir``, as the vector cache would keep them; returns the workspace variables."""
    ref = resolve_model(str(model_dir))
    for i, behavior in enumerate(CAA_BEHAVIORS):
        gen = torch.Generator().manual_seed(100 + i)
        layers = {layer: torch.randn(32, generator=gen) * 0.7 for layer in range(4)}
        meta = {
            "model_id": ref.model_id,
            "weights_fingerprint": ref.weights_fingerprint,
            "behavior": behavior,
            "dataset_sha256": file_sha256(dataset_path(behavior, "generate")),
        }
        SteeringVector(layers, meta).save(ws / "vectors" / ref.slug / f"{behavior}.safetensors")
    return {
        "CAA_BAKE_HOME": str(ws),
        "CAA_BAKE_DATASETS_DIR": str(datasets),
        "CAA_BAKE_VECTORS_DIR": str(ws / "vectors"),
        "CAA_BAKE_EXPORTS_DIR": str(ws / "exported_models"),
        "CAA_BAKE_RESULTS_DIR": str(ws / "results"),
    }
