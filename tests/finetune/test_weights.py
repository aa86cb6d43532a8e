"""``caa_bake.finetune.weights``: build (LoRA too), hash, gather and save, on a tiny Llama.

No DeepSpeed ranks: ZeRO stages below 3 gather with a plain state dict copy.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import build_model as build_tiny
from transformers import AutoModelForCausalLM

from caa_bake.finetune.spec import FinetuneSpec, LoraSettings
from caa_bake.finetune.weights import (
    build_model,
    copy_tokenizer_files,
    gathered_state,
    save_checkpoint,
    state_sha256,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny("llama", tmp_path_factory.mktemp("ft-weights") / "base")


def _spec(base: Path, lora: LoraSettings | None = None, seed: int = 0) -> FinetuneSpec:
    return FinetuneSpec(
        behavior="refusal",
        direction="pos",
        base={"path": str(base), "model_id": "tiny"},
        data={},
        prompt_style="chat-template",
        letters={"A": 1, "B": 2},
        epochs=1,
        learning_rate=1e-4,
        optimizer="sgd",
        batch_size=1,
        world_size=1,
        device="cpu",
        zero_stage=2,
        ds_config={},
        ds_config_source="test",
        out="unused",
        lora=lora,
        seed=seed,
    )


def test_state_sha256_is_the_documented_digest() -> None:
    state = {"b": torch.tensor([1.0, 2.0]), "a": torch.arange(6, dtype=torch.int64).reshape(2, 3)}
    digest = hashlib.sha256()
    for name in ("a", "b"):
        t = state[name]
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.numpy().tobytes())
    assert state_sha256(state) == digest.hexdigest()


def test_state_sha256_sees_names_values_dtypes_and_shapes() -> None:
    t = torch.arange(6, dtype=torch.float32)
    ref = state_sha256({"w": t, "v": torch.zeros(2)})
    assert state_sha256({"v": torch.zeros(2), "w": t.clone()}) == ref  # order, copies: same
    assert state_sha256({"w": t.t().contiguous(), "v": torch.zeros(2)}) == ref
    changed = [
        {"x": t, "v": torch.zeros(2)},
        {"w": t + 1e-6, "v": torch.zeros(2)},
        {"w": t.view(torch.int32), "v": torch.zeros(2)},  # same bytes, other dtype
        {"w": t.reshape(2, 3), "v": torch.zeros(2)},  # same bytes, other shape
        {"w": t},
    ]
    assert len({ref, *(state_sha256(s) for s in changed)}) == 1 + len(changed)


def test_state_sha256_of_bfloat16_and_non_contiguous() -> None:
    x = torch.randn(4, 3).to(torch.bfloat16)
    assert state_sha256({"x": x.t()}) == state_sha256({"x": x.t().contiguous()})


def test_copy_tokenizer_files(base: Path, tmp_path: Path) -> None:
    (base / "notes.txt").write_text("not a tokenizer file")
    copied = copy_tokenizer_files(base, tmp_path)
    assert copied == sorted(p.name for p in tmp_path.iterdir())
    assert "tokenizer.json" in copied and "tokenizer_config.json" in copied
    assert "chat_template.jinja" in copied
    assert not {"config.json", "model.safetensors", "notes.txt"} & set(copied)
    for name in copied:
        assert (tmp_path / name).read_bytes() == (base / name).read_bytes()
    (base / "notes.txt").unlink()


def test_full_model_is_the_base_in_float32(base: Path) -> None:
    model: Any = build_model(_spec(base))
    reference = AutoModelForCausalLM.from_pretrained(base)
    assert type(model) is type(reference)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert state_sha256(model.state_dict()) == state_sha256(reference.state_dict())


def test_lora_adapters_are_seeded(base: Path) -> None:
    lora = LoraSettings(r=2, alpha=4)
    a, b, c = (build_model(_spec(base, lora, seed)) for seed in (5, 5, 6))
    trainable = [n for n, p in a.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert state_sha256(a.state_dict()) == state_sha256(b.state_dict())
    assert state_sha256(a.state_dict()) != state_sha256(c.state_dict())


def test_gathered_state_shares_cpu_tensors_below_zero3(base: Path) -> None:
    """Below ZeRO-3 the state is the model's own CPU tensors, detached: no float32 copy of
    the whole model at the save peak (a 1.5B model's 6 GB)."""
    model = build_model(_spec(base))
    state = gathered_state(model, zero_stage=2)
    assert set(state) == set(model.state_dict())
    name = "model.layers.0.mlp.down_proj.weight"
    param = model.get_parameter(name)
    assert state[name].data_ptr() == param.data_ptr()
    assert not state[name].requires_grad
    assert state_sha256(state) == state_sha256(model.state_dict())


def test_save_full_checkpoint_loads_with_the_same_hash(base: Path, tmp_path: Path) -> None:
    spec = _spec(base)
    model = build_model(spec)
    with torch.no_grad():
        model.get_parameter("model.layers.1.mlp.up_proj.weight").mul_(2.0)  # "training"
    state = gathered_state(model, zero_stage=2)
    sha = save_checkpoint(spec, state, tmp_path / "out")
    assert sha == state_sha256(state)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert state_sha256(loaded.state_dict()) == sha
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (
        base / "tokenizer.json"
    ).read_bytes()


def test_save_lora_checkpoint_is_merged_and_plain(base: Path, tmp_path: Path) -> None:
    spec = _spec(base, LoraSettings(r=2, alpha=4))
    model: Any = build_model(spec)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)  # non-zero B: the adapter changes the weights
    state = gathered_state(model, zero_stage=2)
    sha = save_checkpoint(spec, state, tmp_path / "lora")
    config = json.loads((tmp_path / "lora" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert not list((tmp_path / "lora").glob("adapter_*"))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "lora")
    assert not any("lora" in n for n in loaded.state_dict())
    assert state_sha256(loaded.state_dict()) == sha
    plain = AutoModelForCausalLM.from_pretrained(base)
    name = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(loaded.state_dict()[name], plain.state_dict()[name])


def test_save_refuses_a_state_of_another_model(base: Path, tmp_path: Path) -> None:
    spec = _spec(base)
    state = gathered_state(build_model(spec), zero_stage=2)
    state.pop("model.norm.weight")
    with pytest.raises(RuntimeError, match=r"model\.norm\.weight"):
        save_checkpoint(spec, state, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
