"""Find the decoder blocks of a transformers causal LM (the residual stream lives between them)."""

from __future__ import annotations

from torch import nn

__all__ = ["decoder_blocks"]

# attribute paths from the top-level *ForCausalLM module to its list of decoder blocks
_BLOCK_PATHS = (
    "model.layers",  # llama, mistral, qwen2, granite, gemma, olmo, smollm
    "transformer.h",  # gpt2, gptj, bloom-like
    "gpt_neox.layers",  # gpt-neox, pythia
    "model.decoder.layers",  # opt
    "model.language_model.layers",  # multimodal wrappers (gemma3 etc.)
)


def _get(module: nn.Module, dotted: str) -> object | None:
    obj: object = module
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The ``nn.ModuleList`` of decoder blocks, block ``L``'s output = residual after layer L."""
    for path in _BLOCK_PATHS:
        found = _get(model, path)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return found
    raise TypeError(f"cannot find the decoder blocks of {type(model).__name__}")
