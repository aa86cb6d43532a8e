"""Cached vectors: ``vectors/<model-slug>/<behavior>.safetensors``, extracted on demand.

A cached file is reused only when it was made from the same weights (fingerprint), the
same dataset (sha256) and in the same dtype (the metadata's ``dtype``: the dtype the model ran
in); missing layers are extracted and merged in. A file of another dtype is never reused or
merged into: it is re-extracted in the requested dtype for its layers plus the requested
ones, and replaced, so a file always holds vectors of one dtype. (float32 is not treated as
"good enough" for a bfloat16 request either: the file says what produced it, exactly.)
Normalized vectors (``vectors/<slug>/normalized/``) are recomputed from the raw ones of the
whole set, which all come from one loader and so share its dtype.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from caa_bake import __version__
from caa_bake.core import CaaBakeError
from caa_bake.data import (
    CAA_BEHAVIORS,
    ContrastPair,
    CustomBehavior,
    check_behavior,
    custom_record,
    dataset_path,
    file_sha256,
    is_custom,
    load_pairs,
    prepare_custom,
)
from caa_bake.models import ModelRef, detect_style, dtype_name, load_model
from caa_bake.steering.activations import ActivationSet, activations_path
from caa_bake.steering.extract import POSITION_RULE, extract_vectors
from caa_bake.steering.vector import (
    SteeringVector,
    normalize_to_set,
    normalize_vectors,
    vector_path,
)

__all__ = [
    "BehaviorData",
    "ModelLoader",
    "extract_behavior",
    "get_vector",
    "normalization_members",
    "normalized_set",
]


def _custom_metadata(record: dict[str, object] | None) -> dict[str, str]:
    """What a vector records about a custom behavior's data (source file, hash, split)."""
    if not record:
        return {}
    split = record.get("split")
    return {
        "behavior_kind": "custom",
        "dataset_file": Path(str(record.get("source_file", ""))).name,
        "dataset_source_sha256": str(record.get("source_sha256", "")),
        "dataset_split": json.dumps(split, sort_keys=True),
    }


@dataclass(frozen=True)
class BehaviorData:
    """A behavior's generate-split pairs and where they came from.

    ``custom`` is a custom behavior given by file and not registered yet: it is registered
    (written to the workspace) when its vector is first extracted.
    """

    name: str
    pairs: list[ContrastPair]
    path: Path
    sha256: str
    metadata: dict[str, str] = field(default_factory=dict)
    custom: CustomBehavior | None = None

    @classmethod
    def resolve(
        cls, behavior: str | None, dataset: Path | None = None, test_dataset: Path | None = None
    ) -> BehaviorData:
        """A named behavior's generate split (CAA, anthropic-* or registered custom), or a
        custom file to register (named ``behavior``, or after the file's stem)."""
        if dataset is not None:
            custom = prepare_custom(behavior, dataset, test_dataset)
            sha = hashlib.sha256(custom.generate_bytes).hexdigest()
            path = custom.folder / "generate.json"
            meta = _custom_metadata(custom.record)
            return cls(custom.name, custom.generate, path, sha, meta, custom)
        if test_dataset is not None:
            raise CaaBakeError("--test-dataset needs --dataset FILE (the pairs it belongs to)")
        if behavior is None:
            raise ValueError("need a behavior or a dataset file")
        name = check_behavior(behavior)
        path = dataset_path(name, "generate")
        meta = _custom_metadata(custom_record(name)) if is_custom(name) else {}
        return cls(name, load_pairs(name, "generate"), path, file_sha256(path), meta)

    def register(self) -> None:
        """Write a custom behavior's registration (nothing for a known behavior)."""
        if self.custom is not None:
            self.custom.register()


@dataclass
class ModelLoader:
    """Loads the model the first time it is needed, then reuses it."""

    ref: ModelRef
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    allow_pickle: bool = False
    _loaded: tuple[nn.Module, PreTrainedTokenizerBase] | None = field(default=None, repr=False)

    def get(self) -> tuple[nn.Module, PreTrainedTokenizerBase]:
        if self._loaded is None:
            self._loaded = load_model(
                self.ref, dtype=self.dtype, device=self.device, allow_pickle=self.allow_pickle
            )
        return self._loaded


def _reusable(cached: SteeringVector, ref: ModelRef, data: BehaviorData) -> bool:
    meta = cached.metadata
    return (
        meta.get("weights_fingerprint") == ref.weights_fingerprint
        and meta.get("dataset_sha256") == data.sha256
    )


def _reusable_activations(
    path: Path, ref: ModelRef, data: BehaviorData, dtype: str
) -> ActivationSet | None:
    """The kept activations of ``data`` when they came from these weights, data and dtype."""
    if not path.is_file():
        return None
    kept = ActivationSet.load(path)
    meta = kept.metadata
    same = (
        meta.get("weights_fingerprint") == ref.weights_fingerprint
        and meta.get("dataset_sha256") == data.sha256
        and meta.get("dtype") == dtype
    )
    return kept if same else None


def extract_behavior(
    loader: ModelLoader,
    data: BehaviorData,
    layers: Sequence[int],
    *,
    batch_size: int = 16,
    force: bool = False,
    keep_activations: bool = False,
) -> tuple[SteeringVector, Path]:
    """The raw vector of ``data`` at ``layers``, from the cache or freshly extracted.

    With ``keep_activations`` every pair's two activations at ``layers`` are kept too
    (:func:`~caa_bake.steering.activations.activations_path`), from the same pass.
    Returns the vector holding (at least) ``layers`` and the file it is saved in.
    """
    ref = loader.ref
    data.register()
    path = vector_path(ref.slug, data.name)
    cached = SteeringVector.load(path) if path.is_file() and not force else None
    if cached is not None and not _reusable(cached, ref, data):
        cached = None
    wanted = dtype_name(loader.dtype)
    desc = data.name
    if cached is not None and cached.extraction_dtype != wanted:
        # keep the file's layers, but all of them re-extracted in the requested dtype
        desc = f"{data.name} (cached in {cached.extraction_dtype}; re-extracting in {wanted})"
        layers = sorted(set(layers) | set(cached.layer_ids))
        cached = None
    have = set(cached.layer_ids) if cached is not None else set()
    missing = sorted(set(layers) - have)
    kept_path = activations_path(ref.slug, data.name)
    kept: ActivationSet | None = None
    if keep_activations:
        kept = None if force else _reusable_activations(kept_path, ref, data, wanted)
        missing = sorted(set(missing) | (set(layers) - set(kept.layer_ids if kept else [])))
    if cached is not None and not missing:
        return cached, path
    model, tokenizer = loader.get()
    result = extract_vectors(
        model,
        tokenizer,
        data.pairs,
        missing,
        batch_size=batch_size,
        desc=desc,
        keep=keep_activations,
    )
    merged = dict(cached.layers) if cached is not None else {}
    merged.update(result.vectors)
    metadata = {
        "model_id": ref.model_id,
        "model_revision": ref.revision or "",
        "weights_fingerprint": ref.weights_fingerprint,
        "behavior": data.name,
        "dataset_file": data.path.name,
        "dataset_sha256": data.sha256,
        **data.metadata,
        "num_pairs": str(result.num_pairs),
        "position_rule": POSITION_RULE,
        "prompt_style": detect_style(tokenizer, getattr(model, "config", None)),
        "dtype": wanted,
        "tool": f"caa-bake {__version__}",
        "normalization": "none",
    }
    vector = SteeringVector(merged, metadata)
    vector.save(path)
    if result.activations is not None:
        fresh = ActivationSet.from_pairs(result.activations, data.pairs, metadata)
        (kept.merged(fresh) if kept is not None else fresh).save(kept_path)
    return vector, path


def normalized_set(
    loader: ModelLoader,
    behaviors: Sequence[BehaviorData],
    layers: Sequence[int],
    *,
    batch_size: int = 16,
) -> dict[str, tuple[SteeringVector, Path]]:
    """Normalize the raw vectors of ``behaviors`` together and save them under ``normalized/``."""
    raw = {
        data.name: extract_behavior(loader, data, layers, batch_size=batch_size)[0]
        for data in behaviors
    }
    out: dict[str, tuple[SteeringVector, Path]] = {}
    for name, vec in normalize_vectors(raw).items():
        path = vec.save(vector_path(loader.ref.slug, name, normalized=True))
        out[name] = (vec, path)
    return out


def normalization_members(normalize_with: Sequence[str] | None) -> list[str]:
    """The reference set of a normalization: the 7 CAA behaviors, or the named behaviors."""
    if normalize_with is None:
        return list(CAA_BEHAVIORS)
    members: list[str] = []
    for raw in normalize_with:
        name = raw.strip()
        if name:
            canonical = check_behavior(name)
            if canonical not in members:
                members.append(canonical)
    if not members:
        raise CaaBakeError("--normalize-with names no behavior (e.g. refusal,sycophancy)")
    return members


def get_vector(
    ref: ModelRef,
    behavior: str | None,
    layers: Sequence[int],
    *,
    normalized: bool = True,
    dataset: Path | None = None,
    loader: ModelLoader | None = None,
    batch_size: int = 16,
    dtype: torch.dtype = torch.float32,
    normalize_with: Sequence[str] | None = None,
) -> SteeringVector:
    """The vector to steer with, extracting what is missing.

    With ``normalized`` the vector is normalized against a reference set of behaviors
    (:func:`caa_bake.steering.vector.normalize_to_set`): by default the 7 CAA behaviors
    (the paper's set; for one of them this is exactly the paper's normalization and the
    set's normalized vectors are saved under ``normalized/``), or ``normalize_with``. A
    behavior outside the set is rescaled to the set's per-layer mean norm. The set is
    recorded in the metadata (``normalization``). Vectors are extracted (and cached
    vectors accepted) in ``loader``'s dtype, or in ``dtype`` (on CPU) when no loader is given.
    """
    loader = loader or ModelLoader(ref, dtype=dtype)
    data = BehaviorData.resolve(behavior, dataset)
    if not normalized:
        return extract_behavior(loader, data, layers, batch_size=batch_size)[0].select(layers)
    members = normalization_members(normalize_with)
    own = extract_behavior(loader, data, layers, batch_size=batch_size)[0]
    if sorted(members) == sorted(CAA_BEHAVIORS):
        saved = normalized_set(
            loader, [BehaviorData.resolve(name) for name in members], layers, batch_size=batch_size
        )
        if data.name in saved:
            return saved[data.name][0].select(layers)
    reference = {
        name: own
        if name == data.name
        else extract_behavior(loader, BehaviorData.resolve(name), layers, batch_size=batch_size)[0]
        for name in members
    }
    return normalize_to_set(data.name, own, reference).select(layers)
