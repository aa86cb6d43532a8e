"""A workspace for the ``caa-bake analyze`` tests: random vectors and kept activations of
three behaviors for a tiny test model, saved as the vector cache would keep them."""

from __future__ import annotations

from pathlib import Path

import torch
from cli_runner import workspace

from caa_bake.models.loading import resolve_model
from caa_bake.steering.activations import ActivationSet
from caa_bake.steering.vector import SteeringVector

BEHAVIORS = ("refusal", "sycophancy", "hallucination")
LETTERS = "ABBAAB"


def fill(
    root: Path, model_dir: Path, *, layers: tuple[int, ...] = (0, 1, 2, 3), seed: int = 7
) -> dict[str, str]:
    """Vectors (the mean differences of the activations) and activations under ``root``;
    returns the workspace's environment variables."""
    ref = resolve_model(str(model_dir))
    base = root / "vectors" / ref.slug
    for i, behavior in enumerate(BEHAVIORS):
        gen = torch.Generator().manual_seed(seed + i)
        acts = {layer: torch.randn(len(LETTERS), 2, 32, generator=gen) for layer in layers}
        meta = {
            "model_id": ref.model_id,
            "weights_fingerprint": ref.weights_fingerprint,
            "behavior": behavior,
            "dataset_sha256": "0" * 64,
            "dtype": "float32",
        }
        ActivationSet(acts, LETTERS, meta).save(base / "activations" / f"{behavior}.safetensors")
        vector = {layer: (a[:, 0] - a[:, 1]).mean(0) for layer, a in acts.items()}
        SteeringVector(vector, {**meta, "normalization": "none"}).save(
            base / f"{behavior}.safetensors"
        )
    return workspace(root)
