"""Baking into a loaded model: same numbers as the file-level export, saves and reloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import build_model
from transformers import AutoModelForCausalLM

from caa_bake.bake.bakes import Bake
from caa_bake.bake.export import export_checkpoint
from caa_bake.bake.memory import bake_in_memory
from caa_bake.core.errors import CaaBakeError
from caa_bake.models.loading import resolve_model
from caa_bake.steering.hooks import add_to_block_outputs
from caa_bake.steering.vector import SteeringVector

IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 64]])


def _bakes() -> list[Bake]:
    gen = torch.Generator().manual_seed(3)
    vec = SteeringVector({1: torch.randn(32, generator=gen), 3: torch.randn(32, generator=gen)})
    return [Bake("a", 1, 2.0, vec), Bake("b", 3, -0.5, vec), Bake("c", 1, 0.25, vec)]


def _load(folder: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


@pytest.mark.parametrize("arch", ["llama", "granite", "gpt2", "gpt_neox", "opt"])
def test_in_memory_bake_matches_the_file_export(tmp_path: Path, arch: str) -> None:
    src = build_model(arch, tmp_path / "src", random_biases=True)
    bakes = _bakes()
    model = _load(src)
    rule = bake_in_memory(model, bakes)
    assert rule.model_type == arch
    model.save_pretrained(tmp_path / "saved")
    export_checkpoint(resolve_model(str(src)), bakes, tmp_path / "export")
    saved = load_file(str(tmp_path / "saved" / "model.safetensors"))
    exported: dict[str, torch.Tensor] = {}
    for shard in (tmp_path / "export").glob("*.safetensors"):
        exported.update(load_file(str(shard)))
    assert set(saved) == set(exported) - ({"lm_head.weight"} - set(saved))
    for name, tensor in saved.items():
        assert torch.equal(tensor, exported[name]), name


def test_in_memory_bake_equals_hook_steering_and_reloads(tmp_path: Path) -> None:
    src = build_model("llama", tmp_path / "src")
    bakes = _bakes()
    source, model = _load(src), _load(src)
    bake_in_memory(model, bakes)
    assert model.config.mlp_bias is True
    assert model.config.caa_bake["biases"]["steered"] == {
        "1": "model.layers.1.mlp.down_proj.bias",
        "3": "model.layers.3.mlp.down_proj.bias",
    }
    deltas = {1: bakes[0].delta() + bakes[2].delta(), 3: bakes[1].delta()}
    with torch.no_grad():
        with add_to_block_outputs(source, deltas):
            expected = source(IDS).logits
        got = model(IDS).logits
    assert float((got - expected).abs().max()) < 1e-5
    model.save_pretrained(tmp_path / "saved")
    loaded: Any = AutoModelForCausalLM.from_pretrained(
        str(tmp_path / "saved"), output_loading_info=True
    )
    reloaded, info = loaded
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(IDS).logits, got)


@pytest.mark.parametrize("arch", ["mistral", "qwen2"])
def test_conversions_are_refused_in_memory(tmp_path: Path, arch: str) -> None:
    model = _load(build_model(arch, tmp_path / arch))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CaaBakeError, match="use `caa-bake export`"):
        bake_in_memory(model, _bakes())
    after = model.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_baked_model_is_not_baked_again(tmp_path: Path) -> None:
    model = _load(build_model("llama", tmp_path / "src"))
    bake_in_memory(model, _bakes())
    with pytest.raises(CaaBakeError, match="already baked"):
        bake_in_memory(model, _bakes())


def test_bad_bakes_change_nothing(tmp_path: Path) -> None:
    model = _load(build_model("llama", tmp_path / "src"))
    vec = SteeringVector({1: torch.ones(16)})
    with pytest.raises(CaaBakeError, match=r"vector dimension 16 does not match .* 32"):
        bake_in_memory(model, [Bake("x", 1, 1.0, vec)])
    with pytest.raises(CaaBakeError, match="layer 9 is out of range"):
        bake_in_memory(model, [Bake("x", 9, 1.0, SteeringVector({9: torch.ones(32)}))])
    assert model.config.mlp_bias is False
    assert model.model.layers[0].mlp.down_proj.bias is None
