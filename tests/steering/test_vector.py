"""SteeringVector arithmetic, files and the paper's normalization, checked exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from caa_bake.core.errors import CaaBakeError
from caa_bake.steering.vector import (
    SteeringVector,
    normalize_to_set,
    normalize_vectors,
    vector_path,
)


def _vec(seed: int, layers: tuple[int, ...] = (1, 3), size: int = 8) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    return SteeringVector(
        {lid: torch.randn(size, generator=gen) for lid in layers}, {"behavior": f"b{seed}"}
    )


def test_arithmetic_matches_tensor_math() -> None:
    a, b = _vec(0), _vec(1)
    assert torch.equal((2 * a)[1], a[1] * 2)
    assert torch.equal((a * -0.5)[3], a[3] * -0.5)
    assert torch.equal((-a)[1], -a[1])
    assert torch.equal((a + b)[3], a[3] + b[3])
    assert torch.equal((a - b)[1], a[1] - b[1])
    assert torch.equal((a / 4)[1], a[1] * 0.25)


def test_addition_unions_layers() -> None:
    a, b = _vec(0, (1,)), _vec(1, (2,))
    total = a + b
    assert total.layer_ids == [1, 2]
    assert torch.equal(total[1], a[1]) and torch.equal(total[2], b[2])


def test_values_are_float32_cpu() -> None:
    vec = SteeringVector({0: torch.ones(4, dtype=torch.float16)})
    assert vec[0].dtype == torch.float32


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_multiplier_is_refused(bad: float) -> None:
    with pytest.raises(CaaBakeError, match="finite"):
        _ = _vec(0) * bad


def test_mismatched_sizes_are_refused() -> None:
    with pytest.raises(CaaBakeError, match="size"):
        SteeringVector({0: torch.ones(4), 1: torch.ones(5)})
    with pytest.raises(CaaBakeError, match="hidden size"):
        _ = _vec(0, size=4) + _vec(1, size=5)
    with pytest.raises(CaaBakeError, match="1-D"):
        SteeringVector({0: torch.ones(2, 2)})


def test_missing_layer_names_the_layers_present() -> None:
    with pytest.raises(CaaBakeError, match=r"no layer 7 \(it has: 1, 3\)"):
        _vec(0)[7]


def test_save_load_round_trip(tmp_path: Path) -> None:
    vec = _vec(0).with_metadata(num_pairs="12")
    path = vec.save(tmp_path / "sub" / "v.safetensors")
    back = SteeringVector.load(path)
    assert back.layer_ids == vec.layer_ids
    for lid in vec.layer_ids:
        assert torch.equal(back[lid], vec[lid])
    assert back.metadata == {"behavior": "b0", "num_pairs": "12"}
    assert back.sha256() == vec.sha256()
    assert [p.name for p in path.parent.iterdir()] == ["v.safetensors"]  # no temp left


def test_load_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(CaaBakeError, match="not found"):
        SteeringVector.load(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CaaBakeError, match="cannot read vector file"):
        SteeringVector.load(bad)


def test_sha256_is_of_float32_bytes() -> None:
    import hashlib

    vec = SteeringVector({2: torch.tensor([1.0, -2.0])})
    assert vec.sha256(2) == hashlib.sha256(vec[2].numpy().tobytes()).hexdigest()


def test_normalization_matches_hand_computation() -> None:
    vecs = {"x": _vec(0, (1, 3)), "y": _vec(1, (1, 3)), "z": _vec(2, (1, 3, 5))}
    out = normalize_vectors(vecs)
    assert sorted(out) == ["x", "y", "z"]
    for layer in (1, 3):
        norms = [float(vecs[n][layer].norm()) for n in ("x", "y", "z")]
        target = sum(norms) / 3
        for name, norm in zip(("x", "y", "z"), norms, strict=True):
            expected = vecs[name][layer] * (target / norm)
            assert torch.allclose(out[name][layer], expected, rtol=0, atol=1e-7)
            assert out[name][layer].norm().item() == pytest.approx(target, rel=1e-6)
    assert out["z"].layer_ids == [1, 3]  # only shared layers
    info = json.loads(out["x"].metadata["normalization"])
    assert info["behaviors"] == ["x", "y", "z"]
    assert set(info["target_norm"]) == {"1", "3"}


def test_normalization_keeps_directions() -> None:
    vecs = {"x": _vec(0), "y": _vec(1)}
    out = normalize_vectors(vecs)
    cos = torch.nn.functional.cosine_similarity(out["x"][1], vecs["x"][1], dim=0)
    assert cos.item() == pytest.approx(1.0, abs=1e-6)


def test_vector_path_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAA_BAKE_HOME", str(tmp_path))
    assert vector_path("m", "refusal") == tmp_path / "vectors" / "m" / "refusal.safetensors"
    assert vector_path("m", "refusal", normalized=True) == (
        tmp_path / "vectors" / "m" / "normalized" / "refusal.safetensors"
    )


def test_normalize_to_set() -> None:
    gen = torch.Generator().manual_seed(3)
    ref = {n: SteeringVector({1: torch.randn(8, generator=gen) * (i + 1)}) for i, n in
           enumerate(("a", "b", "c"))}  # fmt: skip
    # a member: exactly the set's normalization
    assert torch.equal(normalize_to_set("b", ref["b"], ref)[1], normalize_vectors(ref)["b"][1])
    # an outsider: the set's mean norm, its own direction; the set itself is unchanged
    out = SteeringVector({1: torch.randn(8, generator=gen) * 10, 2: torch.ones(8)})
    got = normalize_to_set("x", out, ref)
    mean = sum(float(v[1].norm()) for v in ref.values()) / 3
    assert got.layer_ids == [1]
    assert float(got[1].norm()) == pytest.approx(mean, rel=1e-6)
    assert torch.allclose(got[1] / got[1].norm(), out[1] / out[1].norm(), atol=1e-6)
    info = json.loads(got.metadata["normalization"])
    assert info["behaviors"] == ["a", "b", "c"] and "not a member" in info["rule"]
    assert info["original_norm"]["1"] == pytest.approx(float(out[1].norm()))


def test_extraction_dtype_defaults_to_float32() -> None:
    direction = {0: torch.ones(4)}
    assert SteeringVector(direction, {}).extraction_dtype == "float32"  # files before the field
    assert SteeringVector(direction, {"dtype": "bfloat16"}).extraction_dtype == "bfloat16"
