"""Every bake rule on a tiny random model of its architecture, and every refusal.

For each supported architecture: export with the rule, reload with stock transformers,
check the bias tensors exactly, and check numerically that the baked model equals the
source model plus a hook adding ``m x v`` to the block output (and, for the Llama
conversions, that the unsteered export computes the same function as the source).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import build_model
from transformers import AutoModelForCausalLM

from caa_bake.bake.architectures import RULES, UnsupportedArchitecture, check_supported, rule_for
from caa_bake.bake.bakes import Bake
from caa_bake.bake.export import export_checkpoint
from caa_bake.core.errors import CaaBakeError
from caa_bake.models.loading import resolve_model
from caa_bake.steering.hooks import add_to_block_outputs
from caa_bake.steering.vector import SteeringVector

LAYER, MULT = 2, -1.5
IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 64, 128, 11]])


def _vector(seed: int = 0) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    return SteeringVector({LAYER: torch.randn(32, generator=gen)}, {"behavior": "test"})


def _load(folder: Path) -> Any:
    loaded: Any = AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=torch.float32, output_loading_info=True
    )
    model, info = loaded
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
    return model.eval()


def _export(tmp_path: Path, arch: str, mult: float = MULT, **overrides: Any) -> Path:
    src = build_model(arch, tmp_path / arch, random_biases=True, **overrides)
    out = tmp_path / f"{arch}-out"
    export_checkpoint(resolve_model(str(src)), [Bake("test", LAYER, mult, _vector())], out)
    return out


def _max_diff_vs_hook(src: Path, out: Path, delta: torch.Tensor) -> float:
    baked, source = _load(out), _load(src)
    with torch.no_grad(), add_to_block_outputs(source, {LAYER: delta}):
        expected = source(IDS).logits
    with torch.no_grad():
        got = baked(IDS).logits
    return float((got - expected).abs().max())


@pytest.mark.parametrize("arch", ["llama", "granite", "mistral", "qwen2"])
def test_flag_rules_write_explicit_biases(tmp_path: Path, arch: str) -> None:
    out = _export(tmp_path, arch)
    config = json.loads((out / "config.json").read_text())
    assert config["mlp_bias"] is True
    assert config["model_type"] == ("llama" if arch in ("mistral", "qwen2") else arch)
    added = load_file(str(out / "model-caa-bake.safetensors"))
    delta = _vector()[LAYER] * MULT
    scale = 1.0 / 0.22 if arch == "granite" else 1.0
    assert torch.equal(added[f"model.layers.{LAYER}.mlp.down_proj.bias"], delta * scale)
    zero_names = {
        f"model.layers.{i}.mlp.{p}.bias"
        for i in range(4)
        for p in ("gate_proj", "up_proj", "down_proj")
    }
    if arch == "qwen2":
        zero_names |= {f"model.layers.{i}.self_attn.o_proj.bias" for i in range(4)}
    assert set(added) == zero_names
    for name in zero_names - {f"model.layers.{LAYER}.mlp.down_proj.bias"}:
        assert not added[name].any(), name
    assert _max_diff_vs_hook(tmp_path / arch, out, delta) < 1e-5


@pytest.mark.parametrize(
    ("arch", "bias"),
    [
        ("gpt2", "transformer.h.{}.mlp.c_proj.bias"),
        ("gpt_neox", "gpt_neox.layers.{}.mlp.dense_4h_to_h.bias"),
        ("opt", "model.decoder.layers.{}.fc2.bias"),
    ],
)
def test_native_rules_add_to_the_existing_bias(tmp_path: Path, arch: str, bias: str) -> None:
    out = _export(tmp_path, arch)
    assert not (out / "model-caa-bake.safetensors").exists()
    before = load_file(str(tmp_path / arch / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    delta = _vector()[LAYER] * MULT
    name = bias.format(LAYER)
    assert before[name].abs().min() > 0  # random, non-zero original bias
    assert torch.equal(after[name], before[name] + delta)
    assert {k for k in before if not torch.equal(before[k], after[k])} == {name}
    assert _max_diff_vs_hook(tmp_path / arch, out, delta) < 1e-5


@pytest.mark.parametrize("arch", ["mistral", "qwen2"])
@pytest.mark.parametrize("tied", [False, True])
def test_llama_conversion_is_exact_unsteered(tmp_path: Path, arch: str, tied: bool) -> None:
    out = _export(tmp_path, arch, mult=0.0, tie_word_embeddings=tied)
    baked, source = _load(out), _load(tmp_path / arch)
    assert type(baked).__name__ == "LlamaForCausalLM"
    if arch == "qwen2":
        q_bias = source.model.layers[1].self_attn.q_proj.bias
        assert q_bias is not None and q_bias.abs().min() > 0
        assert torch.equal(baked.model.layers[1].self_attn.q_proj.bias, q_bias)
    with torch.no_grad():
        assert torch.equal(baked(IDS).logits, source(IDS).logits)


def test_granite_divides_by_residual_multiplier() -> None:
    rule = rule_for({"model_type": "granite", "residual_multiplier": 0.25})
    assert rule.scale({"residual_multiplier": 0.25}) == 4.0
    with pytest.raises(UnsupportedArchitecture, match=r"residual_multiplier = 0\.0"):
        rule_for({"model_type": "granite", "residual_multiplier": 0.0})


@pytest.mark.parametrize("arch", ["gemma2", "gemma3_text", "olmo2", "olmo3"])
def test_post_mlp_norm_architectures_are_refused(tmp_path: Path, arch: str) -> None:
    src = build_model(arch, tmp_path / arch)
    out = tmp_path / "out"
    with pytest.raises(UnsupportedArchitecture, match=f"cannot bake into {arch}: a norm follows"):
        export_checkpoint(resolve_model(str(src)), [Bake("t", LAYER, 1.0, _vector())], out)
    assert not out.exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "mistral", "max_position_embeddings": 32768}, "sliding window \\(4096"),
        (
            {"model_type": "mistral", "sliding_window": 16, "max_position_embeddings": 256},
            "sliding window \\(16 tokens\\) is active",
        ),
        (
            {
                "model_type": "qwen2",
                "use_sliding_window": True,
                "layer_types": ["sliding_attention"],
            },
            "use_sliding_window is on",
        ),
        ({"model_type": "opt", "do_layer_norm_before": False}, "do_layer_norm_before: false"),
        ({"model_type": "opt", "enable_bias": False}, "enable_bias: false"),
        ({"model_type": "qwen3"}, "q/k norms"),
        ({"model_type": "gemma"}, "no MLP bias parameter"),
        ({"model_type": "phi3"}, "fused gate/up"),
        ({"model_type": "mamba"}, "unsupported architecture 'mamba'"),
        ({}, "unsupported architecture '\\(no model_type\\)'"),
    ],
)
def test_inexact_or_unknown_configs_are_refused(config: dict[str, object], message: str) -> None:
    if config.get("model_type") == "mistral" and "sliding_window" not in config:
        config = {**config, "sliding_window": 4096}  # MistralConfig's default, as resolved
    with pytest.raises(UnsupportedArchitecture, match=message):
        rule_for(config)


def test_sliding_window_at_context_length_is_inactive() -> None:
    rule = rule_for(
        {"model_type": "mistral", "sliding_window": 256, "max_position_embeddings": 256}
    )
    assert rule.export_model_type == "llama"


def test_mistral_with_a_default_sliding_window_is_refused_end_to_end(tmp_path: Path) -> None:
    src = build_model("mistral", tmp_path / "m", sliding_window=16)
    with pytest.raises(UnsupportedArchitecture, match="sliding window"):
        export_checkpoint(
            resolve_model(str(src)), [Bake("t", LAYER, 1.0, _vector())], tmp_path / "out"
        )
    assert not (tmp_path / "out").exists()


def test_rule_table_is_consistent() -> None:
    for model_type, rule in RULES.items():
        assert rule.model_type == model_type
        assert rule.steer, model_type
        assert rule.converts == (rule.export_architecture is not None)
        assert rule.native_bias == (not rule.zero_biases)
        check_supported(model_type)
    with pytest.raises(CaaBakeError):
        check_supported("gemma2")
