"""The ``extract`` command as one library call: validate everything, then extract and save."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig

from caa_bake.core import CaaBakeError
from caa_bake.models import dtype_name, num_layers, resolve_dtype, resolve_model
from caa_bake.steering.activations import activations_path
from caa_bake.steering.cache import BehaviorData, ModelLoader, extract_behavior, normalized_set
from caa_bake.steering.layers import parse_layers

__all__ = ["ExtractJob", "pick_device", "run_extract_job"]


def pick_device(name: str) -> str:
    """``auto`` means CUDA when available; asking for CUDA without one is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CaaBakeError("--device cuda was asked for but no CUDA GPU is available; use cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise CaaBakeError(f"unknown device {name!r}; use cpu, cuda or auto")
    return name


@dataclass(frozen=True)
class ExtractJob:
    """What ``caa-bake extract`` was asked to do."""

    behaviors: list[str]
    layers: str = "13"
    model: str | None = None
    revision: str | None = None
    dataset: Path | None = None
    test_dataset: Path | None = None
    batch_size: int = 16
    dtype: str = "auto"
    device: str = "auto"
    force: bool = False
    allow_pickle: bool = False
    normalize: bool = False
    keep_activations: bool = False


def run_extract_job(job: ExtractJob, *, status: Callable[[str], None]) -> Iterator[str]:
    """Run ``job``; yields one result line per saved vector file.

    Every input is checked (behaviors, dataset files, model, layers) before the model is
    loaded, so a mistake costs nothing and writes nothing; a custom dataset is registered
    in the workspace (``datasets/custom/<name>/``) only then.
    """
    device = pick_device(job.device)
    dtype = resolve_dtype(job.dtype, device)  # a bad dtype fails before anything else
    if job.dataset is not None:
        name = job.behaviors[0] if job.behaviors else None
        data = [BehaviorData.resolve(name, job.dataset, job.test_dataset)]
    else:
        if job.test_dataset is not None:
            raise CaaBakeError("--test-dataset needs --dataset FILE (the pairs it belongs to)")
        data = [BehaviorData.resolve(name) for name in job.behaviors]
    ref = resolve_model(job.model, revision=job.revision, allow_pickle=job.allow_pickle)
    n_layers = num_layers(AutoConfig.from_pretrained(ref.path))
    layers = parse_layers(job.layers, n_layers)
    loader = ModelLoader(ref, dtype=dtype, device=device, allow_pickle=job.allow_pickle)
    status(
        f"model {ref.model_id} ({n_layers} layers, {dtype_name(dtype)} on {device}), "
        f"layers {job.layers} -> {layers}"
    )
    for item in data:
        vector, path = extract_behavior(
            loader,
            item,
            layers,
            batch_size=job.batch_size,
            force=job.force,
            keep_activations=job.keep_activations,
        )
        norms = ", ".join(f"L{k}={v:.3g}" for k, v in vector.select(layers).norms().items())
        yield f"{path}  ({vector.metadata.get('num_pairs')} pairs; norms {norms})"
        if job.keep_activations:
            yield f"{activations_path(loader.ref.slug, item.name)}  (per-pair activations)"
    if job.normalize:
        for name, (_vec, path) in normalized_set(loader, data, layers).items():
            yield f"{path}  (normalized with {len(data)} behaviors: {name})"
