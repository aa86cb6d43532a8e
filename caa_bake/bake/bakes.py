"""Bakes: the steering terms an export writes, and how they are made from what the user typed.

A :class:`Bake` is ``multiplier x vector[layer]`` added to block ``layer``'s output; a
:class:`BakeSpec` is a requested bake before its vector is fetched (``--bake
behavior:layer:mult``); :func:`resolve_bakes` fetches the vectors (from a file, or the cache,
extracting if missing) after checking every spec against the model.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from caa_bake.bake.architectures import rule_for
from caa_bake.bake.source import load_source_config, model_dims
from caa_bake.core import CaaBakeError
from caa_bake.steering import SteeringVector, check_layer

if TYPE_CHECKING:
    from caa_bake.models import ModelRef

__all__ = ["Bake", "BakeSpec", "export_name", "parse_bake_spec", "resolve_bakes"]


@dataclass(frozen=True)
class Bake:
    """One steering term: add ``multiplier x vector[layer]`` to block ``layer``'s output."""

    behavior: str
    layer: int
    multiplier: float
    vector: SteeringVector
    vector_source: str = "cache"

    def __post_init__(self) -> None:
        if not math.isfinite(float(self.multiplier)):
            raise CaaBakeError(f"multiplier must be a finite number, got {self.multiplier}")
        self.vector[self.layer]  # raises a clear error when the vector lacks the layer

    def delta(self) -> torch.Tensor:
        """``multiplier x vector[layer]`` in float32."""
        return self.vector[self.layer] * float(self.multiplier)

    @property
    def normalization_set(self) -> list[str]:
        """The behaviors the vector was normalized with (empty if not normalized)."""
        raw = self.vector.metadata.get("normalization", "none")
        try:
            info = json.loads(raw)
        except json.JSONDecodeError:
            return []
        return [str(b) for b in info.get("behaviors", [])] if isinstance(info, dict) else []

    def record(self) -> dict[str, Any]:
        """The provenance entry written to ``config.json``."""
        return {
            "behavior": self.behavior,
            "layer": self.layer,
            "multiplier": float(self.multiplier),
            "vector_sha256": self.vector.sha256(self.layer),
            "vector_norm": self.vector.norms()[self.layer],
            "normalized": bool(self.normalization_set),
            "normalization_set": self.normalization_set,
            "vector_source": self.vector_source,
            "vector_model_id": self.vector.metadata.get("model_id", ""),
            "dataset_sha256": self.vector.metadata.get("dataset_sha256", ""),
        }


def _fmt_number(value: float) -> str:
    return f"{float(value):g}"


def export_name(slug: str, bakes: Sequence[Bake]) -> str:
    """``<model-slug>-<behavior>-L<layer>-m<mult>`` (bakes joined with ``_``)."""
    parts = [f"{b.behavior}-L{b.layer}-m{_fmt_number(b.multiplier)}" for b in bakes]
    return f"{slug}-{'_'.join(parts)}"


# ---- from what the user typed to bakes ------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class BakeSpec:
    """One requested bake before its vector is fetched.

    ``behavior`` names a cached/extracted vector, unless ``vector_file`` is given (then it
    only names the bake).
    """

    behavior: str
    layer: int
    multiplier: float
    vector_file: Path | None = None


def parse_bake_spec(text: str) -> BakeSpec:
    """``behavior:layer:mult`` (or ``vector.safetensors:layer:mult``) -> :class:`BakeSpec`."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise CaaBakeError(f"cannot read --bake {text!r}: use behavior:layer:multiplier")
    what, layer_text, mult_text = parts
    try:
        layer, multiplier = int(layer_text), float(mult_text)
    except ValueError:
        raise CaaBakeError(
            f"cannot read --bake {text!r}: layer must be an integer and multiplier a number"
        ) from None
    if what.endswith(".safetensors"):
        path = Path(what).expanduser()
        return BakeSpec(path.stem, layer, multiplier, path)
    return BakeSpec(what, layer, multiplier)


def _check_spec(spec: BakeSpec, n_layers: int) -> None:
    if not math.isfinite(spec.multiplier):
        raise CaaBakeError(f"multiplier must be a finite number, got {spec.multiplier}")
    check_layer(spec.layer, n_layers)
    if not _NAME.match(spec.behavior):
        raise CaaBakeError(
            f"behavior name {spec.behavior!r} must use letters, digits, '.', '_' or '-' "
            "(it becomes part of the export's folder name)"
        )


def resolve_bakes(
    source: ModelRef,
    specs: Sequence[BakeSpec],
    *,
    normalized: bool = True,
    status: Callable[[str], None] | None = None,
    vector_model: ModelRef | None = None,
    dtype: torch.dtype = torch.float32,
    normalize_with: Sequence[str] | None = None,
) -> list[Bake]:
    """Fetch each spec's vector: from its file, else the cache (extracting it if missing).

    Every spec is checked against the model (architecture, layer range, multiplier) before
    anything is extracted. ``normalized`` asks the cache for the paper-normalized vector.
    ``vector_model`` takes the cached vectors from another model with the same shapes (the
    base model of a finetuned ``source``: the paper's combined model) instead of ``source``.
    ``dtype``: the dtype a missing vector is extracted in (and a cached one must have).
    ``normalize_with``: the normalization set (default: the 7 CAA behaviors).
    A vector file extracted from other weights than ``source`` (or than the base model of a
    finetuned ``source``) is refused.
    """
    from caa_bake.steering import get_vector, normalization_members

    if not specs:
        raise CaaBakeError("nothing to bake: give --behavior/--layer/--mult or --bake")
    _raw, resolved = load_source_config(source.path)
    rule_for(resolved.to_dict())
    n_layers, hidden = model_dims(resolved)
    for spec in specs:
        _check_spec(spec, n_layers)
    donor = source if vector_model is None else vector_model
    files = {
        spec.vector_file: _load_vector_file(spec.vector_file, source)
        for spec in specs
        if spec.vector_file is not None
    }
    if normalized and any(spec.vector_file is None for spec in specs):
        normalization_members(normalize_with)  # a bad name fails before any extraction
    if vector_model is not None:
        _check_same_shapes(source, vector_model, n_layers, hidden)
    cached: dict[str, list[int]] = {}
    for spec in specs:
        if spec.vector_file is None:
            name = _cached_name(spec.behavior, donor)
            cached.setdefault(name, [])
            if spec.layer not in cached[name]:
                cached[name].append(spec.layer)
    vectors = {
        name: get_vector(
            donor,
            name,
            sorted(layers),
            normalized=normalized,
            dtype=dtype,
            normalize_with=normalize_with,
        )
        for name, layers in cached.items()
    }
    origin = "cache" if vector_model is None else f"model:{vector_model.model_id}"
    bakes: list[Bake] = []
    for spec in specs:
        if spec.vector_file is not None:
            vector = files[spec.vector_file]
            bakes.append(
                Bake(
                    spec.behavior,
                    spec.layer,
                    spec.multiplier,
                    vector,
                    f"file:{spec.vector_file.name}",
                )
            )
        else:
            name = _cached_name(spec.behavior, donor)
            bakes.append(Bake(name, spec.layer, spec.multiplier, vectors[name], origin))
    return bakes


def _cached_name(behavior: str, model: ModelRef) -> str:
    """The canonical name of a behavior whose vector comes from the cache; an unknown name
    that has a vector file in the cache (but no registered dataset) points to ``--vector``."""
    from caa_bake.data import check_behavior
    from caa_bake.steering import vector_path

    try:
        return check_behavior(behavior)
    except CaaBakeError:
        path = vector_path(model.slug, behavior)
        if _NAME.match(behavior) and path.is_file():
            raise CaaBakeError(
                f"unknown behavior '{behavior}': no dataset is registered under that name, but "
                f"{path} exists; bake it with --vector {path} (or register the pairs with "
                f"--behavior {behavior} --dataset FILE)"
            ) from None
        raise CaaBakeError(
            f"unknown behavior '{behavior}'; give its vector file with --vector FILE, or "
            f"register your contrast pairs with --behavior {behavior} --dataset FILE "
            "(see `caa-bake datasets list` for the known behaviors)"
        ) from None


def _fingerprint_of_base(source: ModelRef) -> str:
    """The base model's weights fingerprint when ``source`` is a ``caa-bake finetune`` output."""
    try:
        raw = json.loads((Path(source.path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    block = raw.get("caa_bake") if isinstance(raw, dict) else None
    if not isinstance(block, dict) or block.get("kind") != "finetune":
        return ""
    base = block.get("base")
    return str(base.get("weights_fingerprint") or "") if isinstance(base, dict) else ""


def _load_vector_file(path: Path, source: ModelRef) -> SteeringVector:
    """A ``--vector`` file, refused when its metadata names other weights than ``source``'s
    (a width that does not fit is refused when the bake is planned)."""
    vector = SteeringVector.load(path)
    made_from = vector.metadata.get("weights_fingerprint", "")
    allowed = {source.weights_fingerprint, _fingerprint_of_base(source)} - {""}
    if made_from and made_from not in allowed:
        named = vector.metadata.get("model_id") or "another model"
        raise CaaBakeError(
            f"vector file {path} was extracted from {named} (weights {made_from[:12]}), not "
            f"from {source.model_id} (weights {source.weights_fingerprint[:12]}); extract the "
            "vector from this model, or bake another model's vector with --vector-from MODEL"
        )
    return vector


def _check_same_shapes(source: ModelRef, donor: ModelRef, n_layers: int, hidden: int) -> None:
    """``donor``'s vectors fit ``source``: same number of blocks and hidden size."""
    _raw, resolved = load_source_config(donor.path)
    d_layers, d_hidden = model_dims(resolved)
    if (d_layers, d_hidden) != (n_layers, hidden):
        raise CaaBakeError(
            f"--vector-from {donor.model_id} has {d_layers} blocks of width {d_hidden}, "
            f"but {source.model_id} has {n_layers} of width {hidden}: its vectors do not fit"
        )
