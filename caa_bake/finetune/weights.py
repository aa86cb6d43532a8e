"""Model weights of a finetuning run: build the trainable model, gather, hash and save it.

- :func:`build_model` loads the base checkpoint in float32 and, for LoRA, wraps it with a
  peft adapter (seeded, so every rank starts from the same adapter).
- :func:`gathered_state` returns the full state dict on every rank (under ZeRO-3 the
  parameters are partitioned, so they are gathered and copied first; this is a collective
  call).
- :func:`state_sha256` identifies weights by value, so ranks can compare theirs.
- :func:`save_checkpoint` (rank 0) loads the gathered state into a fresh copy of the model,
  merges a LoRA adapter, and writes a plain Hugging Face checkpoint (safetensors, float32)
  plus the base model's tokenizer files.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from caa_bake.core import CaaBakeError

if TYPE_CHECKING:
    from caa_bake.finetune.spec import FinetuneSpec

__all__ = [
    "TOKENIZER_FILES",
    "build_model",
    "copy_tokenizer_files",
    "gathered_state",
    "save_checkpoint",
    "state_sha256",
]

#: file-name patterns copied unchanged from the base model next to the saved weights
TOKENIZER_FILES = (
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "chat_template*",
    "*.model",
)


def build_model(spec: FinetuneSpec) -> nn.Module:
    """The base model in float32 (train mode off), wrapped in a LoRA adapter if asked."""
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(spec.base["path"], dtype=torch.float32)
    if spec.lora is None:
        return model
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise CaaBakeError("--lora needs peft: pip install 'caa-bake[finetune]'") from None
    torch.manual_seed(spec.seed)
    config = LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=spec.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    peft_model: nn.Module = get_peft_model(model, config)
    return peft_model


def gathered_state(module: nn.Module, zero_stage: int) -> dict[str, torch.Tensor]:
    """The complete state dict on CPU; under ZeRO-3 every rank must call this.

    Below ZeRO-3 every rank holds the whole model, and tensors already on the CPU are
    returned as they are (training has finished, nothing changes them): a float32 copy of a
    1.5B model would be 6 GB more at the run's memory peak, where the saved model is built.
    Under ZeRO-3 the gathered parameters are released when the gather ends, so they are copied.
    """
    if zero_stage != 3:
        return {k: v.detach().to("cpu") for k, v in module.state_dict().items()}
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def copy_tokenizer_files(source: Path, dest: Path) -> list[str]:
    """Copy the tokenizer / chat-template files of ``source`` into ``dest``; returns names."""
    copied: list[str] = []
    for pattern in TOKENIZER_FILES:
        for path in sorted(Path(source).glob(pattern)):
            if path.is_file() and path.name not in copied:
                shutil.copyfile(path, dest / path.name)
                copied.append(path.name)
    return sorted(copied)


def save_checkpoint(spec: FinetuneSpec, state: Mapping[str, torch.Tensor], out: Path) -> str:
    """Write the trained weights as a standalone checkpoint into ``out``; returns their sha256.

    The sha256 is :func:`state_sha256` of the saved model's own state dict (after merging a
    LoRA adapter), i.e. what ``from_pretrained(out).state_dict()`` hashes to.
    """
    fresh: Any = build_model(spec)
    fresh.load_state_dict(dict(state), strict=True)
    if spec.lora is not None:
        fresh = fresh.merge_and_unload()
    fresh.save_pretrained(str(out), safe_serialization=True, max_shard_size="500MB")
    copy_tokenizer_files(Path(spec.base["path"]), Path(out))
    return state_sha256(fresh.state_dict())
