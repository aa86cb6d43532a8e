"""Baking into a GGUF, on the real embedded SmolLM2 Q4_1 GGUF (and tiny hand-written GGUFs
for the refusals): quantized tensors byte-identical, the bias exactly mult x v in F32,
metadata kept plus caa_bake.* provenance, deterministic bytes, the source untouched."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from caa_bake.bake import (
    GGUF_FORMAT,
    Bake,
    bake_gguf,
    gguf_model_ref,
    read_gguf,
)
from caa_bake.core import CaaBakeError, file_sha256
from caa_bake.steering import SteeringVector

gguf = pytest.importorskip("gguf")

MULT_A, MULT_B = -1.5, 0.75


def _vector(fingerprint: str, seed: int, layers: tuple[int, ...] = (5, 13)) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    tensors = {layer: torch.randn(576, generator=gen) for layer in layers}
    return SteeringVector(tensors, {"weights_fingerprint": fingerprint, "model_id": "smollm2"})


@pytest.fixture(scope="module")
def bakes(ref: Any) -> list[Bake]:
    vec = _vector(ref.weights_fingerprint, 0)
    return [Bake("refusal", 13, MULT_A, vec), Bake("refusal", 5, MULT_B, vec)]


@pytest.fixture(scope="module")
def baked(source: Path, ref: Any, bakes: list[Bake], tmp_path_factory: Any) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "baked.gguf"
    result = bake_gguf(source, bakes, out, ref=ref)
    assert result.path == out
    assert result.steered == {"blk.13.ffn_down.bias": "added", "blk.5.ffn_down.bias": "added"}
    assert result.copied == 272
    return out


@pytest.fixture(scope="module")
def readers(source: Path, baked: Path) -> tuple[Any, Any]:
    return gguf.GGUFReader(source), gguf.GGUFReader(baked)


def test_every_source_tensor_is_byte_identical(readers: tuple[Any, Any]) -> None:
    src, out = readers
    got = {t.name: t for t in out.tensors}
    assert len(out.tensors) == len(src.tensors) + 2
    quantized = 0
    for tensor in src.tensors:
        new = got[tensor.name]
        assert new.tensor_type == tensor.tensor_type
        assert list(new.shape) == list(tensor.shape)
        assert bytes(new.data.tobytes()) == bytes(tensor.data.tobytes()), tensor.name
        quantized += tensor.tensor_type.name in ("Q4_1", "Q8_0")
    assert quantized == 211  # 30 blocks x 7 Q4_1 matrices + the Q8_0 embedding


def test_bias_is_mult_times_vector_in_f32(readers: tuple[Any, Any], bakes: list[Bake]) -> None:
    _src, out = readers
    got = {t.name: t for t in out.tensors}
    names = [t.name for t in out.tensors]
    for bake in bakes:
        name = f"blk.{bake.layer}.ffn_down.bias"
        tensor = got[name]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(tensor.shape) == [576]
        want = (bake.vector[bake.layer] * bake.multiplier).numpy()
        assert np.array_equal(np.asarray(tensor.data), want)  # exact, not approximate
        # placed right after its block's ffn_down weight
        assert names.index(name) == names.index(f"blk.{bake.layer}.ffn_down.weight") + 1


def test_metadata_is_kept_and_provenance_added(
    readers: tuple[Any, Any], source: Path, ref: Any
) -> None:
    src, out = readers
    for item in src.fields.values():
        if item.name.startswith("GGUF.") and item.name != "GGUF.kv_count":
            continue
        if item.name == "GGUF.kv_count":
            assert out.fields[item.name].contents() == item.contents() + 6
            continue
        new = out.fields[item.name]
        assert new.types == item.types, item.name
        assert new.contents() == item.contents(), item.name
    src_keys = [k for k in src.fields if not k.startswith("GGUF.")]
    assert [k for k in out.fields if not k.startswith(("GGUF.", "caa_bake."))] == src_keys

    def meta(key: str) -> Any:
        return out.fields[f"caa_bake.{key}"].contents()

    assert meta("format") == GGUF_FORMAT
    assert meta("source_sha256") == file_sha256(source)
    assert meta("weights_fingerprint") == ref.weights_fingerprint
    records = json.loads(meta("bakes"))
    assert [(r["layer"], r["multiplier"]) for r in records] == [(13, MULT_A), (5, MULT_B)]
    assert json.loads(meta("steered_tensors")) == {
        "blk.13.ffn_down.bias": "added",
        "blk.5.ffn_down.bias": "added",
    }


def test_same_inputs_give_the_same_bytes_and_the_source_is_untouched(
    source: Path, ref: Any, bakes: list[Bake], baked: Path, tmp_path: Path
) -> None:
    from caa_bake.models import GGUF_SHA256

    again = bake_gguf(source, bakes, tmp_path / "again.gguf", ref=ref).path
    assert again.read_bytes() == baked.read_bytes()
    assert file_sha256(source) == GGUF_SHA256
    assert [p.name for p in tmp_path.iterdir()] == ["again.gguf"]  # no temporaries left


def test_baking_onto_an_existing_bias_adds_to_it(ref: Any, tmp_path: Path) -> None:
    old = np.linspace(-1, 1, 8, dtype=np.float32)
    tiny = _tiny(tmp_path / "biased.gguf", "llama", bias=old)
    gen = torch.Generator().manual_seed(1)
    vec = SteeringVector({0: torch.randn(8, generator=gen)}, {"weights_fingerprint": "f" * 64})
    fake = dataclasses.replace(ref, weights_fingerprint="f" * 64)
    out = tmp_path / "twice.gguf"
    result = bake_gguf(tiny, [Bake("survival", 0, 2.0, vec)], out, ref=fake)
    assert result.steered == {"blk.0.ffn_down.bias": "patched"}
    reader = gguf.GGUFReader(out)
    assert [t.name for t in reader.tensors] == ["blk.0.ffn_down.weight", "blk.0.ffn_down.bias"]
    got = reader.tensors[1]
    assert got.tensor_type == gguf.GGMLQuantizationType.F32
    assert np.array_equal(np.asarray(got.data), old + (vec[0] * 2.0).numpy())


def test_a_vector_from_other_weights_is_refused(source: Path, ref: Any, tmp_path: Path) -> None:
    vec = _vector("0" * 64, 0)
    with pytest.raises(CaaBakeError, match="not from the weights this GGUF dequantizes to"):
        bake_gguf(source, [Bake("refusal", 13, 1.0, vec)], tmp_path / "x.gguf", ref=ref)
    assert not list(tmp_path.iterdir())


def test_the_source_is_never_the_output(source: Path, ref: Any, bakes: list[Bake]) -> None:
    with pytest.raises(CaaBakeError, match="the source is never written"):
        bake_gguf(source, bakes, source, ref=ref, force=True)


def test_a_truncated_gguf_is_refused_in_one_line(source: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with source.open("rb") as fh:
        cut.write_bytes(fh.read(source.stat().st_size // 2))
    with pytest.raises(CaaBakeError) as err:
        read_gguf(cut)
    assert "truncated" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_corrupted_gguf_is_refused_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + bytes(64))
    with pytest.raises(CaaBakeError, match=r"not a readable GGUF file .*magic"):
        read_gguf(bad)


def _tiny(path: Path, arch: str, bias: Any = None, **extra: int) -> Path:
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(2)
    writer.add_embedding_length(8)
    for key, value in extra.items():
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_tensor("blk.0.ffn_down.weight", np.ones((8, 16), dtype=np.float32))
    if bias is not None:
        writer.add_tensor("blk.0.ffn_down.bias", bias)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_an_unsupported_architecture_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(CaaBakeError) as err:
        read_gguf(_tiny(tmp_path / "q.gguf", "qwen2"))
    text = str(err.value)
    assert "architecture 'qwen2' is not supported" in text
    assert "accepted: llama" in text and "ffn_down.bias" in text


def test_a_mixture_of_experts_llama_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CaaBakeError, match="mixture-of-experts"):
        read_gguf(_tiny(tmp_path / "moe.gguf", "llama", expert_count=8))
    info = read_gguf(_tiny(tmp_path / "dense.gguf", "llama"))
    assert (info.architecture, info.n_layers, info.hidden) == ("llama", 2, 8)


def test_an_unknown_gguf_needs_a_matching_converted_folder(tmp_path: Path, ref: Any) -> None:
    tiny = _tiny(tmp_path / "dense.gguf", "llama")
    with pytest.raises(CaaBakeError, match="is not a GGUF caa-bake knows"):
        gguf_model_ref(tiny)
    with pytest.raises(CaaBakeError, match=r"was not converted from dense\.gguf"):
        gguf_model_ref(tiny, vector_from=ref)


def test_a_copy_of_a_known_gguf_maps_to_its_model(source: Path, ref: Any, tmp_path: Path) -> None:
    copy = tmp_path / "renamed.gguf"
    shutil.copyfile(source, copy)
    model, digest = gguf_model_ref(copy)
    assert model.weights_fingerprint == ref.weights_fingerprint
    assert digest == file_sha256(source)


def test_the_fast_reader_parses_like_the_stock_reader(source: Path) -> None:
    from caa_bake.bake import open_reader

    fast, stock = open_reader(source), gguf.GGUFReader(source, "r")
    assert type(fast.data) is np.ndarray  # a view of the memory map, not a copy
    assert [(f.name, f.types, f.contents()) for f in fast.fields.values()] == [
        (f.name, f.types, f.contents()) for f in stock.fields.values()
    ]
    assert len(fast.tensors) == len(stock.tensors) == 272
    for mine, theirs in zip(fast.tensors, stock.tensors, strict=True):
        assert (mine.name, mine.tensor_type, mine.data_offset) == (
            theirs.name,
            theirs.tensor_type,
            theirs.data_offset,
        )
        assert np.array_equal(mine.data, theirs.data)
