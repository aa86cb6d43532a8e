"""The bias plan: bakes summed per layer, added biases (Llama) and patched native ones (GPT-2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import build_model

from caa_bake.bake.architectures import rule_for
from caa_bake.bake.bakes import Bake
from caa_bake.bake.plan import BiasPlan, plan_biases, sum_deltas
from caa_bake.bake.safetensors_io import open_checkpoint
from caa_bake.bake.source import load_source_config
from caa_bake.core.errors import CaaBakeError
from caa_bake.steering.vector import SteeringVector

HIDDEN = 32


def _vec(seed: int) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    return SteeringVector({layer: torch.randn(HIDDEN, generator=gen) for layer in range(4)})


def test_sum_deltas_adds_bakes_at_one_layer() -> None:
    a, b = _vec(0), _vec(1)
    deltas = sum_deltas([Bake("a", 1, 2.0, a), Bake("b", 1, -1.0, b), Bake("a", 3, 1.0, a)], 4, 32)
    assert sorted(deltas) == [1, 3]
    assert torch.allclose(deltas[1], a[1] * 2.0 - b[1])
    assert torch.equal(deltas[3], a[3])
    with pytest.raises(CaaBakeError, match="nothing to bake"):
        sum_deltas([], 4, 32)
    with pytest.raises(CaaBakeError, match="vector dimension 32 does not match"):
        sum_deltas([Bake("a", 1, 1.0, a)], 4, 64)


def _plan(folder: Path, bakes: list[Bake]) -> BiasPlan:
    _raw, resolved = load_source_config(folder)
    return plan_biases(open_checkpoint(folder), rule_for(resolved.to_dict()), resolved, bakes)


def test_llama_gets_added_biases(tmp_path: Path) -> None:
    src = build_model("llama", tmp_path / "llama", tokenizer=False, weights_dtype=torch.bfloat16)
    vec = _vec(2)
    plan = _plan(src, [Bake("t", 1, 1.5, vec)])
    assert plan.steered == {1: "model.layers.1.mlp.down_proj.bias"}
    added = plan.added
    steered = added["model.layers.1.mlp.down_proj.bias"]
    assert steered.dtype == torch.bfloat16
    assert torch.equal(steered, (vec[1] * 1.5).to(torch.bfloat16))
    zeros = [n for n in added if n != "model.layers.1.mlp.down_proj.bias"]
    assert zeros and all(not added[n].any() for n in zeros)
    assert plan.patched == {} and plan.scale == 1.0


def test_gpt2_native_bias_is_patched(tmp_path: Path) -> None:
    src = build_model("gpt2", tmp_path / "gpt2", tokenizer=False, random_biases=True)
    vec = _vec(3)
    plan = _plan(src, [Bake("t", 2, -1.0, vec)])
    (name,) = plan.patched
    original, new = plan.patched[name]
    assert plan.steered == {2: name}
    assert original.any()
    assert torch.allclose(new, original - vec[2])
