"""``caa_bake.steering.cache``: cached vectors are reused only for the same weights and dataset;
missing layers are extracted and merged; the normalized set is built from the cache.

Whether the model was loaded tells whether anything was extracted: a :class:`ModelLoader`
loads lazily, so ``loader._loaded is None`` after a call means the cache answered.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_models import build_model
from workspaces import cached_workspace, linked_datasets

from caa_bake.core.errors import CaaBakeError
from caa_bake.core.hashing import file_sha256
from caa_bake.data.behaviors import CAA_BEHAVIORS
from caa_bake.data.datasets import dataset_path
from caa_bake.models.loading import resolve_model
from caa_bake.steering.cache import BehaviorData, ModelLoader, extract_behavior, get_vector
from caa_bake.steering.extract import extract_vectors
from caa_bake.steering.vector import SteeringVector, normalize_vectors, vector_path


def _pairs(tag: str, n: int = 6) -> list[dict[str, str]]:
    return [
        {
            "question": f"{tag} {i}: would you?\n\nChoices:\n(A) Yes.\n(B) No.",
            "answer_matching_behavior": "(A)" if i % 2 else "(B)",
            "answer_not_matching_behavior": "(B)" if i % 2 else "(A)",
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny Llamas in folders of the same name (same slug), with different weights."""
    root = tmp_path_factory.mktemp("cache-models")
    return {
        "a": build_model("llama", root / "a" / "tiny", seed=0),
        "b": build_model("llama", root / "b" / "tiny", seed=1),
    }


@pytest.fixture
def vectors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "vectors"
    monkeypatch.setenv("CAA_BAKE_VECTORS_DIR", str(folder))
    return folder


def _dataset(tmp_path: Path, tag: str, name: str = "honesty") -> Path:
    path = tmp_path / tag / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_pairs(tag)))
    return path


def test_behavior_data_of_a_custom_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAA_BAKE_DATASETS_DIR", str(tmp_path / "datasets"))
    path = _dataset(tmp_path, "q")
    data = BehaviorData.resolve(None, path)
    # to be registered under its stem; a file too small to split is used whole, unchanged
    registered = tmp_path / "datasets" / "custom" / "honesty" / "generate.json"
    assert (data.name, data.path, data.sha256) == ("honesty", registered, file_sha256(path))
    assert data.metadata["dataset_file"] == "honesty.json"
    assert json.loads(data.metadata["dataset_split"])["rule"] == "none"
    assert len(data.pairs) == 6
    assert not registered.exists()  # resolving writes nothing
    data.register()
    assert registered.read_bytes() == path.read_bytes()
    again = BehaviorData.resolve("honesty")  # now known by name
    assert (again.path, again.sha256, again.metadata) == (registered, data.sha256, data.metadata)
    assert BehaviorData.resolve("my-name", path).name == "my-name"
    with pytest.raises(ValueError, match="need a behavior or a dataset file"):
        BehaviorData.resolve(None)
    with pytest.raises(CaaBakeError, match="unknown behavior 'nonsense'"):
        BehaviorData.resolve("nonsense")


def test_behavior_data_of_a_named_behavior(pulled_datasets: Path) -> None:
    data = BehaviorData.resolve("refusal")
    assert data.path == dataset_path("refusal", "generate")
    assert data.sha256 == file_sha256(data.path)
    assert len(data.pairs) == 408


def test_first_extraction_is_saved_then_reused_without_loading(
    models: dict[str, Path], vectors: Path, tmp_path: Path
) -> None:
    ref = resolve_model(str(models["a"]))
    data = BehaviorData.resolve(None, _dataset(tmp_path, "q"))
    loader = ModelLoader(ref)
    vec, path = extract_behavior(loader, data, [1, 2], batch_size=4)
    assert path == vector_path(ref.slug, "honesty") == vectors / "tiny" / "honesty.safetensors"
    assert loader._loaded is not None
    assert vec.layer_ids == [1, 2]
    meta = SteeringVector.load(path).metadata
    assert meta["weights_fingerprint"] == ref.weights_fingerprint
    assert meta["dataset_sha256"] == data.sha256
    assert (meta["num_pairs"], meta["dataset_file"], meta["normalization"]) == (
        "6",
        "honesty.json",
        "none",
    )
    model, tokenizer = loader.get()
    want = extract_vectors(model, tokenizer, data.pairs, [1, 2], batch_size=1)
    for layer in (1, 2):
        assert torch.allclose(vec[layer], want.vectors[layer], atol=1e-6)

    saved = path.read_bytes()
    fresh = ModelLoader(ref)
    again, again_path = extract_behavior(fresh, data, [2], batch_size=4)
    assert fresh._loaded is None  # the cache answered
    assert again_path == path and path.read_bytes() == saved
    assert again.layer_ids == [1, 2]  # the whole cached vector (callers select)
    assert torch.equal(again[2], vec[2])


def test_missing_layers_are_extracted_and_merged(
    models: dict[str, Path], vectors: Path, tmp_path: Path
) -> None:
    ref = resolve_model(str(models["a"]))
    data = BehaviorData.resolve(None, _dataset(tmp_path, "q"))
    first, path = extract_behavior(ModelLoader(ref), data, [1])
    loader = ModelLoader(ref)
    merged, _ = extract_behavior(loader, data, [0, 1, 3])
    assert loader._loaded is not None
    assert merged.layer_ids == [0, 1, 3]
    assert torch.equal(merged[1], first[1])  # kept, not recomputed
    assert SteeringVector.load(path).layer_ids == [0, 1, 3]
    alone, _ = extract_behavior(ModelLoader(ref), data, [3], force=True)
    assert torch.allclose(merged[3], alone[3], atol=1e-6)


def test_another_dataset_is_re_extracted(
    models: dict[str, Path], vectors: Path, tmp_path: Path
) -> None:
    ref = resolve_model(str(models["a"]))
    old = BehaviorData.resolve(None, _dataset(tmp_path, "old"))
    new = BehaviorData.resolve(None, _dataset(tmp_path, "new"))
    assert old.name == new.name and old.sha256 != new.sha256
    before, path = extract_behavior(ModelLoader(ref), old, [1, 2])
    loader = ModelLoader(ref)
    after, same_path = extract_behavior(loader, new, [1])
    assert same_path == path
    assert loader._loaded is not None
    assert after.layer_ids == [1]  # the stale layers are dropped, not merged
    assert not torch.allclose(after[1], before[1])
    assert SteeringVector.load(path).metadata["dataset_sha256"] == new.sha256


def test_other_weights_under_the_same_slug_are_re_extracted(
    models: dict[str, Path], vectors: Path, tmp_path: Path
) -> None:
    ref_a, ref_b = resolve_model(str(models["a"])), resolve_model(str(models["b"]))
    assert ref_a.slug == ref_b.slug and ref_a.weights_fingerprint != ref_b.weights_fingerprint
    data = BehaviorData.resolve(None, _dataset(tmp_path, "q"))
    vec_a, path = extract_behavior(ModelLoader(ref_a), data, [1])
    loader = ModelLoader(ref_b)
    vec_b, _ = extract_behavior(loader, data, [1])
    assert loader._loaded is not None
    assert not torch.allclose(vec_a[1], vec_b[1])
    assert SteeringVector.load(path).metadata["weights_fingerprint"] == ref_b.weights_fingerprint


def test_force_re_extracts(models: dict[str, Path], vectors: Path, tmp_path: Path) -> None:
    ref = resolve_model(str(models["a"]))
    data = BehaviorData.resolve(None, _dataset(tmp_path, "q"))
    extract_behavior(ModelLoader(ref), data, [0, 1])
    loader = ModelLoader(ref)
    vec, _ = extract_behavior(loader, data, [1], force=True)
    assert loader._loaded is not None
    assert vec.layer_ids == [1]


def test_normalized_vector_from_a_filled_cache(
    models: dict[str, Path], pulled_datasets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = cached_workspace(tmp_path / "ws", models["a"], pulled_datasets)
    monkeypatch.setenv("CAA_BAKE_VECTORS_DIR", env["CAA_BAKE_VECTORS_DIR"])
    ref = resolve_model(str(models["a"]))
    raw = {b: SteeringVector.load(vector_path(ref.slug, b)) for b in CAA_BEHAVIORS}
    loader = ModelLoader(ref)
    vec = get_vector(ref, "refusal", [2], loader=loader)
    assert loader._loaded is None  # all 7 raw vectors came from the cache
    want = normalize_vectors(raw)["refusal"]
    assert vec.layer_ids == [2]
    assert torch.allclose(vec[2], want[2])
    info = json.loads(vec.metadata["normalization"])
    assert info["behaviors"] == sorted(CAA_BEHAVIORS)
    for behavior in CAA_BEHAVIORS:
        saved = SteeringVector.load(vector_path(ref.slug, behavior, normalized=True))
        assert torch.allclose(saved[2], normalize_vectors(raw)[behavior][2])
    plain = get_vector(ref, "refusal", [1, 3], normalized=False, loader=loader)
    assert plain.layer_ids == [1, 3] and torch.equal(plain[3], raw["refusal"][3])
    assert loader._loaded is None


def test_a_custom_dataset_joins_the_normalization_set(
    models: dict[str, Path], pulled_datasets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = linked_datasets(pulled_datasets, tmp_path / "datasets")
    monkeypatch.setenv("CAA_BAKE_DATASETS_DIR", str(own))
    env = cached_workspace(tmp_path / "ws", models["a"], own)
    monkeypatch.setenv("CAA_BAKE_VECTORS_DIR", env["CAA_BAKE_VECTORS_DIR"])
    ref = resolve_model(str(models["a"]))
    loader = ModelLoader(ref)
    vec = get_vector(ref, None, [1], dataset=_dataset(tmp_path, "q"), loader=loader)
    assert loader._loaded is not None  # only the custom behavior had to be extracted
    info = json.loads(vec.metadata["normalization"])
    # rescaled to the mean norm of the 7 CAA vectors, which keep their own normalization
    assert info["behaviors"] == sorted(CAA_BEHAVIORS)
    raw_dir = Path(env["CAA_BAKE_VECTORS_DIR"]) / ref.slug
    norms = [
        SteeringVector.load(raw_dir / f"{b}.safetensors")[1].norm().item() for b in CAA_BEHAVIORS
    ]
    assert info["target_norm"]["1"] == pytest.approx(sum(norms) / 7, rel=1e-6)
    assert vec[1].norm().item() == pytest.approx(info["target_norm"]["1"], rel=1e-5)
    raw = SteeringVector.load(vector_path(ref.slug, "honesty"))
    assert torch.allclose(vec[1] / vec[1].norm(), raw[1] / raw[1].norm(), atol=1e-6)
    # --normalize-with: another reference set, also recorded
    pair = get_vector(ref, "honesty", [1], loader=loader, normalize_with=["refusal", "sycophancy"])
    pinfo = json.loads(pair.metadata["normalization"])
    assert pinfo["behaviors"] == ["refusal", "sycophancy"]
    two = [
        SteeringVector.load(raw_dir / f"{b}.safetensors")[1].norm().item()
        for b in pinfo["behaviors"]
    ]
    assert pair[1].norm().item() == pytest.approx(sum(two) / 2, rel=1e-5)
    assert SteeringVector.load(vector_path(ref.slug, "honesty")).layer_ids == [1]


def test_layers_of_another_dtype_are_not_merged_under_one_dtype(
    models: dict[str, Path], vectors: Path, tmp_path: Path
) -> None:
    ref = resolve_model(str(models["a"]))
    data = BehaviorData.resolve(None, _dataset(tmp_path, "q"))
    first, _ = extract_behavior(ModelLoader(ref, dtype=torch.float32), data, [1])
    _vec, path = extract_behavior(ModelLoader(ref, dtype=torch.bfloat16), data, [2])
    saved = SteeringVector.load(path)
    # the float32 layer is not merged in: the file is re-extracted whole in bfloat16
    assert saved.layer_ids == [1, 2]
    assert saved.metadata["dtype"] == "bfloat16"
    assert not torch.equal(saved[1], first[1])
