"""File-level export: layout, dtypes, stacking, provenance, model card, unbake, bad input.

Every export test hashes the source folder before and after: an export never writes there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import build_model, tree_digest

from caa_bake.bake.bakes import Bake, export_name
from caa_bake.bake.export import BIAS_SHARD, RENAMED_SINGLE, export_checkpoint
from caa_bake.bake.inspection import inspect_export
from caa_bake.bake.model_card import update_model_card
from caa_bake.bake.unbake import unbake_checkpoint
from caa_bake.core.errors import CaaBakeError
from caa_bake.models.loading import ModelRef, resolve_model
from caa_bake.steering.vector import SteeringVector, normalize_vectors

HIDDEN = 32


def _vec(seed: int, layers: tuple[int, ...] = (1, 2)) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    return SteeringVector({layer: torch.randn(HIDDEN, generator=gen) for layer in layers})


@pytest.fixture()
def llama(tmp_path: Path) -> Iterator[ModelRef]:
    src = build_model("llama", tmp_path / "src")
    before = tree_digest(src)
    yield resolve_model(str(src))
    assert tree_digest(src) == before, "the export wrote to its source folder"


@pytest.fixture()
def sharded(tmp_path: Path) -> Iterator[ModelRef]:
    src = build_model("llama", tmp_path / "sharded", max_shard_size="100KB")
    before = tree_digest(src)
    yield resolve_model(str(src))
    assert tree_digest(src) == before, "the export wrote to its source folder"


def _all_tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(shard)))
    return out


def _no_leftovers(parent: Path) -> None:
    assert [p.name for p in parent.iterdir() if ".tmp-" in p.name] == []


def test_export_is_reproducible_byte_for_byte(sharded: ModelRef, tmp_path: Path) -> None:
    bakes = [Bake("t", 1, 1.5, _vec(0))]
    a = export_checkpoint(sharded, bakes, tmp_path / "a" / "export").path
    b = export_checkpoint(sharded, bakes, tmp_path / "b" / "export").path
    assert tree_digest(a) == tree_digest(b)


def test_single_file_checkpoint_becomes_indexed(llama: ModelRef, tmp_path: Path) -> None:
    result = export_checkpoint(llama, [Bake("t", 1, 2.0, _vec(0))], tmp_path / "out")
    out = result.path
    assert sorted(p.name for p in out.glob("*.safetensors")) == [RENAMED_SINGLE, BIAS_SHARD]
    assert (out / RENAMED_SINGLE).read_bytes() == (llama.path / "model.safetensors").read_bytes()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    tensors = _all_tensors(out)
    assert set(index["weight_map"]) == set(tensors)
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in tensors.values()
    )
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).read_bytes() == (llama.path / name).read_bytes()
    assert (out / "chat_template.jinja").read_bytes() == (
        llama.path / "chat_template.jinja"
    ).read_bytes()
    assert result.methods == {"model.safetensors": "copied"}


def test_sharded_checkpoint_keeps_its_shards(sharded: ModelRef, tmp_path: Path) -> None:
    out = export_checkpoint(sharded, [Bake("t", 2, -1.0, _vec(0))], tmp_path / "out").path
    source_shards = sorted(p.name for p in sharded.path.glob("*.safetensors"))
    assert len(source_shards) > 1
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted([*source_shards, BIAS_SHARD])
    for name in source_shards:
        assert (out / name).read_bytes() == (sharded.path / name).read_bytes()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    source_index = json.loads((sharded.path / "model.safetensors.index.json").read_text())
    for tensor, shard in source_index["weight_map"].items():
        assert index["weight_map"][tensor] == shard


def test_link_shares_unchanged_shards_only(tmp_path: Path, sharded: ModelRef) -> None:
    result = export_checkpoint(sharded, [Bake("t", 1, 1.0, _vec(0))], tmp_path / "l", link=True)
    for name, method in result.methods.items():
        assert method in ("hardlink", "reflink")
        if method == "hardlink":
            assert os.stat(result.path / name).st_ino == os.stat(sharded.path / name).st_ino
    src = build_model("gpt2", tmp_path / "gpt2", random_biases=True)
    before = tree_digest(src)
    native = export_checkpoint(
        resolve_model(str(src)), [Bake("t", 1, 1.0, _vec(0))], tmp_path / "g", link=True
    )
    assert native.methods == {"model.safetensors": "copied+patched"}
    assert (
        os.stat(native.path / "model.safetensors").st_ino
        != os.stat(src / "model.safetensors").st_ino
    )
    assert tree_digest(src) == before


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_biases_use_the_model_dtype(tmp_path: Path, arch: str, dtype: torch.dtype) -> None:
    src = build_model(arch, tmp_path / "src", random_biases=True, weights_dtype=dtype)
    vec = _vec(0)
    out = export_checkpoint(resolve_model(str(src)), [Bake("t", 1, 3.0, vec)], tmp_path / "o").path
    tensors = _all_tensors(out)
    delta = vec[1] * 3.0
    if arch == "llama":
        bias = tensors["model.layers.1.mlp.down_proj.bias"]
        assert torch.equal(bias, delta.to(dtype))
        assert tensors["model.layers.0.mlp.gate_proj.bias"].dtype == dtype
    else:
        original = load_file(str(src / "model.safetensors"))["transformer.h.1.mlp.c_proj.bias"]
        bias = tensors["transformer.h.1.mlp.c_proj.bias"]
        assert torch.equal(bias, (original.to(torch.float32) + delta).to(dtype))
    config = json.loads((out / "config.json").read_text())
    assert config["caa_bake"]["biases"]["dtype"] == str(dtype).removeprefix("torch.")


def test_bakes_stack_by_adding_their_biases(llama: ModelRef, tmp_path: Path) -> None:
    v, w = _vec(0), _vec(1)
    bakes = [Bake("a", 1, 1.0, v), Bake("b", 1, -0.5, w), Bake("a", 2, 2.0, v)]
    result = export_checkpoint(llama, bakes, tmp_path / "out")
    tensors = load_file(str(result.path / BIAS_SHARD))
    assert torch.equal(tensors["model.layers.1.mlp.down_proj.bias"], v[1] * 1.0 + w[1] * -0.5)
    assert torch.equal(tensors["model.layers.2.mlp.down_proj.bias"], v[2] * 2.0)
    assert export_name("m", bakes) == "m-a-L1-m1_b-L1-m-0.5_a-L2-m2"


def test_provenance_block_records_every_bake(llama: ModelRef, tmp_path: Path) -> None:
    normalized = normalize_vectors({"alpha": _vec(0), "beta": _vec(1)})
    bakes = [Bake("alpha", 1, 1.0, normalized["alpha"]), Bake("raw", 2, -2.0, _vec(2), "file:x")]
    out = export_checkpoint(llama, bakes, tmp_path / "out").path
    config = json.loads((out / "config.json").read_text())
    assert config["mlp_bias"] is True
    block = config["caa_bake"]
    assert block["format"] == 1
    assert block["tool"] == "caa-bake 0.1.0"
    assert block["rule"] == "llama"
    assert block["source"] == {
        "model_id": llama.model_id,
        "revision": None,
        "path": str(llama.path),
        "weights_fingerprint": llama.weights_fingerprint,
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
    }
    first, second = block["bakes"]
    assert first["behavior"] == "alpha"
    assert first["layer"] == 1
    assert first["multiplier"] == 1.0
    assert first["vector_sha256"] == normalized["alpha"].sha256(1)
    assert first["vector_norm"] == normalized["alpha"].norms()[1]
    assert first["normalized"] is True
    assert first["normalization_set"] == ["alpha", "beta"]
    assert second["normalized"] is False
    assert second["normalization_set"] == []
    assert second["vector_source"] == "file:x"
    assert block["biases"]["steered"] == {
        "1": "model.layers.1.mlp.down_proj.bias",
        "2": "model.layers.2.mlp.down_proj.bias",
    }


def test_model_card(llama: ModelRef, tmp_path: Path) -> None:
    out = export_checkpoint(llama, [Bake("sycophancy", 1, -1.0, _vec(0))], tmp_path / "out").path
    card = (out / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "library_name: transformers" in front
    assert "- caa-bake\n" in front
    assert "- sycophancy\n" in front
    assert "base_model" not in front  # a local folder is not a Hub id
    for heading in ("## What was baked", "## Position caveat", "## How to load", "## Evaluation"):
        assert heading in card
    assert "| sycophancy | 1 | -1 |" in card
    assert "every token, prompt included" in card
    assert 'AutoModelForCausalLM.from_pretrained("out")' in card
    update_model_card(out, "| eval | score |\n|---|---|\n| sycophancy | 0.42 |")
    assert "| sycophancy | 0.42 |" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    ("arch", "options"),
    [
        ("llama", {}),
        ("llama", {"max_shard_size": "100KB"}),
        ("gpt2", {"random_biases": True}),
        ("qwen2", {"random_biases": True}),
    ],
)
def test_unbake_restores_the_source_files(
    tmp_path: Path, arch: str, options: dict[str, object]
) -> None:
    src = build_model(arch, tmp_path / "src", **options)  # type: ignore[arg-type]
    (src / "README.md").write_text("# the original card\n")
    vec = _vec(0)
    out = export_checkpoint(
        resolve_model(str(src)), [Bake("t", 1, 1.0, vec), Bake("u", 2, -3.0, vec)], tmp_path / "e"
    ).path
    restored = unbake_checkpoint(out, tmp_path / "restored")
    assert tree_digest(restored) == tree_digest(src)


def test_inspect_describes_the_biases(llama: ModelRef, tmp_path: Path) -> None:
    out = export_checkpoint(llama, [Bake("t", 1, 2.0, _vec(0))], tmp_path / "out").path
    lines = inspect_export(out)
    assert lines[1] == "made by: caa-bake 0.1.0 (format 1), rule llama"
    assert any(line.startswith("  t: layer 1, multiplier 2, |v| = ") for line in lines)
    assert lines[-1].startswith("  bias model.layers.1.mlp.down_proj.bias (float32): adds |")
    assert lines[-1].endswith("max |stored - m*v| = 0")


def test_force_replaces_an_existing_export(llama: ModelRef, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_checkpoint(llama, [Bake("t", 1, 1.0, _vec(0))], out)
    with pytest.raises(CaaBakeError, match="already exists; pass --force"):
        export_checkpoint(llama, [Bake("t", 1, 5.0, _vec(0))], out)
    assert torch.equal(
        load_file(str(out / BIAS_SHARD))["model.layers.1.mlp.down_proj.bias"], _vec(0)[1]
    )
    export_checkpoint(llama, [Bake("t", 1, 5.0, _vec(0))], out, force=True)
    bias = load_file(str(out / BIAS_SHARD))["model.layers.1.mlp.down_proj.bias"]
    assert torch.equal(bias, _vec(0)[1] * 5.0)
    _no_leftovers(tmp_path)


def test_other_weight_formats_and_folders_are_not_exported(tmp_path: Path, llama: ModelRef) -> None:
    (llama.path / "pytorch_model.bin").write_bytes(b"stale")
    (llama.path / "original").mkdir()
    ref = resolve_model(str(llama.path))
    result = export_checkpoint(ref, [Bake("t", 1, 1.0, _vec(0))], tmp_path / "out")
    assert list(result.skipped) == ["original/", "pytorch_model.bin"]
    assert not (result.path / "pytorch_model.bin").exists()
    (llama.path / "pytorch_model.bin").unlink()
    (llama.path / "original").rmdir()


def test_an_export_is_not_baked_again(llama: ModelRef, tmp_path: Path) -> None:
    out = export_checkpoint(llama, [Bake("t", 1, 1.0, _vec(0))], tmp_path / "out").path
    with pytest.raises(CaaBakeError, match="already a caa-bake export"):
        export_checkpoint(resolve_model(str(out)), [Bake("t", 1, 1.0, _vec(0))], tmp_path / "o2")
    assert not (tmp_path / "o2").exists()


# ---- bad input: one clear error, nothing written -----------------------------------------


@pytest.mark.parametrize(
    ("bakes", "message"),
    [
        (lambda: [Bake("t", 1, 1.0, SteeringVector({1: torch.ones(16)}))], "dimension 16 .* 32"),
        (lambda: [Bake("t", 4, 1.0, _vec(0, (4,)))], "layer 4 is out of range.* 4 layers"),
        (lambda: [Bake("t", -1, 1.0, _vec(0, (-1,)))], "layer -1 is out of range"),
        (lambda: [], "nothing to bake"),
    ],
)
def test_bad_bakes_write_nothing(
    llama: ModelRef, tmp_path: Path, bakes: object, message: str
) -> None:
    out = tmp_path / "exports" / "out"
    with pytest.raises(CaaBakeError, match=message):
        export_checkpoint(llama, bakes(), out)  # type: ignore[operator]
    assert not out.exists()
    assert not out.parent.exists()


def test_unwritable_output_folder(llama: ModelRef, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(CaaBakeError, match="cannot create the output folder"):
        export_checkpoint(llama, [Bake("t", 1, 1.0, _vec(0))], blocker / "sub" / "out")
    assert blocker.read_text() == "not a folder"


def test_output_inside_the_source_is_refused(llama: ModelRef) -> None:
    with pytest.raises(CaaBakeError, match="overlaps the source folder"):
        export_checkpoint(llama, [Bake("t", 1, 1.0, _vec(0))], llama.path / "baked")


def test_corrupt_shard_header(tmp_path: Path) -> None:
    src = build_model("llama", tmp_path / "src", max_shard_size="100KB")
    ref = resolve_model(str(src))
    shard = sorted(src.glob("model-*.safetensors"))[-1]
    data = bytearray(shard.read_bytes())
    data[8:12] = b"\xff\xfe{["
    shard.write_bytes(bytes(data))
    with pytest.raises(CaaBakeError, match=f"corrupt safetensors header in .*{shard.name}"):
        export_checkpoint(ref, [Bake("t", 1, 1.0, _vec(0))], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    _no_leftovers(tmp_path)


def test_missing_shard(tmp_path: Path) -> None:
    src = build_model("llama", tmp_path / "src", max_shard_size="100KB")
    ref = resolve_model(str(src))
    shard = sorted(src.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CaaBakeError, match=f"shard {shard.name} named in"):
        export_checkpoint(ref, [Bake("t", 1, 1.0, _vec(0))], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unbake_needs_an_export(llama: ModelRef, tmp_path: Path) -> None:
    with pytest.raises(CaaBakeError, match="not a caa-bake export"):
        unbake_checkpoint(llama.path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
