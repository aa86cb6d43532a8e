"""``SteeringVector``: per-layer CAA vectors with metadata, arithmetic, save/load, normalization.

A vector file is one safetensors file holding a float32 tensor ``layer.<L>`` of shape
``[hidden_size]`` for each layer, plus string metadata (model, behavior, dataset hash,
number of pairs, position rule, tool version, normalization).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from caa_bake.core import CaaBakeError, atomic_file, vectors_dir

__all__ = ["SteeringVector", "normalize_to_set", "normalize_vectors", "vector_path"]

_PREFIX = "layer."


@dataclass(frozen=True)
class SteeringVector:
    """Per-layer steering directions (float32, CPU) and their provenance.

    Arithmetic reads like math: ``2 * v``, ``-v``, ``v + w`` (layers missing on one side
    count as zero), ``v - w``. Metadata values are strings (safetensors' rule).
    """

    layers: Mapping[int, torch.Tensor]
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.layers:
            raise CaaBakeError("a steering vector needs at least one layer")
        clean: dict[int, torch.Tensor] = {}
        size: int | None = None
        for layer, tensor in sorted(self.layers.items()):
            if tensor.ndim != 1:
                raise CaaBakeError(
                    f"layer {layer}: expected a 1-D tensor, got {tuple(tensor.shape)}"
                )
            if size is not None and tensor.numel() != size:
                raise CaaBakeError(f"layer {layer}: size {tensor.numel()} differs from {size}")
            size = tensor.numel()
            clean[int(layer)] = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()
        object.__setattr__(self, "layers", clean)
        object.__setattr__(self, "metadata", {str(k): str(v) for k, v in self.metadata.items()})

    # ---- access -------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return next(iter(self.layers.values())).numel()

    @property
    def layer_ids(self) -> list[int]:
        return sorted(self.layers)

    @property
    def extraction_dtype(self) -> str:
        """The dtype the vector was extracted in (files without the field: float32)."""
        return str(self.metadata.get("dtype") or "float32")

    def __getitem__(self, layer: int) -> torch.Tensor:
        if layer not in self.layers:
            have = ", ".join(str(x) for x in self.layer_ids)
            raise CaaBakeError(f"the vector has no layer {layer} (it has: {have})")
        return self.layers[layer]

    def norms(self) -> dict[int, float]:
        """L2 norm of each layer's direction."""
        return {layer: float(t.norm()) for layer, t in self.layers.items()}

    def sha256(self, layer: int | None = None) -> str:
        """sha256 of the float32 little-endian bytes of one layer (or all, in layer order)."""
        digest = hashlib.sha256()
        for lid in [layer] if layer is not None else self.layer_ids:
            digest.update(self[lid].numpy().astype("<f4").tobytes())
        return digest.hexdigest()

    def select(self, layers: Iterable[int]) -> SteeringVector:
        """A vector holding only ``layers``."""
        return SteeringVector({lid: self[lid] for lid in layers}, self.metadata)

    def with_metadata(self, **updates: str) -> SteeringVector:
        return SteeringVector(self.layers, {**self.metadata, **updates})

    # ---- arithmetic ---------------------------------------------------------------
    def __mul__(self, factor: float) -> SteeringVector:
        if not math.isfinite(float(factor)):
            raise CaaBakeError(f"multiplier must be a finite number, got {factor}")
        return SteeringVector({k: v * float(factor) for k, v in self.layers.items()}, self.metadata)

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> SteeringVector:
        return self * (1.0 / float(divisor))

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def __add__(self, other: SteeringVector) -> SteeringVector:
        if other.hidden_size != self.hidden_size:
            raise CaaBakeError(
                f"cannot add vectors of hidden size {self.hidden_size} and {other.hidden_size}"
            )
        out = dict(self.layers)
        for layer, tensor in other.layers.items():
            out[layer] = out[layer] + tensor if layer in out else tensor
        return SteeringVector(out, self.metadata)

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        return self + (-other)

    # ---- files --------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        """Write atomically as safetensors; returns ``path``."""
        path = Path(path)
        tensors = {f"{_PREFIX}{k}": v for k, v in self.layers.items()}
        with atomic_file(path) as tmp:
            save_file(tensors, str(tmp), metadata=dict(self.metadata))
        return path

    @classmethod
    def load(cls, path: Path) -> SteeringVector:
        """Read a vector file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise CaaBakeError(f"vector file not found: {path}")
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CaaBakeError(f"cannot read vector file {path}: {exc}") from exc
        layers: dict[int, torch.Tensor] = {}
        for name, tensor in tensors.items():
            if not name.startswith(_PREFIX) or not name[len(_PREFIX) :].isdigit():
                raise CaaBakeError(f"{path}: unexpected tensor {name!r} (expected layer.<N>)")
            layers[int(name[len(_PREFIX) :])] = tensor
        _check_finite(path, layers)
        return cls(layers, metadata)


def _check_finite(path: Path, layers: Mapping[int, torch.Tensor]) -> None:
    """Refuse NaN / inf values: baked into a bias they would break every output."""
    bad = {
        layer: int((~torch.isfinite(t)).sum())
        for layer, t in sorted(layers.items())
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    }
    if bad:
        first, count = next(iter(bad.items()))
        more = f" (and {len(bad) - 1} more layer(s))" if len(bad) > 1 else ""
        raise CaaBakeError(
            f"vector file {path}: layer {first} has {count} NaN/inf value(s){more}; "
            "re-extract the vector or fix the file"
        )


def vector_path(model_slug: str, behavior: str, *, normalized: bool = False) -> Path:
    """``vectors/<model-slug>/[normalized/]<behavior>.safetensors``."""
    base = vectors_dir() / model_slug
    return (base / "normalized" if normalized else base) / f"{behavior}.safetensors"


def normalize_vectors(vectors: Mapping[str, SteeringVector]) -> dict[str, SteeringVector]:
    """The paper's per-layer normalization across a set of behaviors.

    At each layer every behavior's direction is rescaled to the same L2 norm, the mean of
    their original norms. Only layers present in every vector are kept. Each result records
    the behavior set, the rule, its own original norm and the common target norm.
    """
    targets = _set_targets(vectors)
    names = sorted(vectors)
    rule = "per-layer: every behavior rescaled to the mean L2 norm of the set"
    return {name: _rescale(name, vectors[name], targets, names, rule) for name in names}


def normalize_to_set(
    name: str, vector: SteeringVector, reference: Mapping[str, SteeringVector]
) -> SteeringVector:
    """``vector`` normalized against the behavior set ``reference``.

    When ``name`` is one of the set this is :func:`normalize_vectors` of the set. Otherwise
    the set's per-layer target norm (the mean of its members' norms) is computed without
    ``vector``, and ``vector`` is rescaled to it: it gets the norm every member of the set
    gets, and the set's own normalized vectors do not change. Layers missing from the set or
    from ``vector`` are dropped.
    """
    if name in reference:
        return normalize_vectors({**reference, name: vector})[name]
    targets = _set_targets(reference)
    kept = {layer: t for layer, t in targets.items() if layer in vector.layers}
    if not kept:
        raise CaaBakeError(f"{name}: the vector shares no layer with the normalization set")
    rule = "per-layer: rescaled to the mean L2 norm of the set (the vector is not a member)"
    return _rescale(name, vector, kept, sorted(reference), rule)


def _set_targets(vectors: Mapping[str, SteeringVector]) -> dict[int, float]:
    if not vectors:
        raise CaaBakeError("normalization needs at least one behavior vector")
    common = set.intersection(*(set(v.layer_ids) for v in vectors.values()))
    if not common:
        raise CaaBakeError("the behavior vectors share no layer; extract the same layers for all")
    names = sorted(vectors)
    return {
        layer: sum(float(vectors[n][layer].norm()) for n in names) / len(names)
        for layer in sorted(common)
    }


def _rescale(
    name: str, vec: SteeringVector, targets: Mapping[int, float], names: list[str], rule: str
) -> SteeringVector:
    layers: dict[int, torch.Tensor] = {}
    original: dict[str, float] = {}
    for layer, target in targets.items():
        norm = float(vec[layer].norm())
        if norm == 0.0:
            raise CaaBakeError(f"{name}: layer {layer} vector is zero; cannot normalize")
        layers[layer] = vec[layer] * (target / norm)
        original[str(layer)] = norm
    info = {
        "rule": rule,
        "behaviors": names,
        "target_norm": {str(k): v for k, v in targets.items()},
        "original_norm": original,
    }
    return SteeringVector(layers, {**vec.metadata, "normalization": json.dumps(info)})
