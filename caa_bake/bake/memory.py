"""Bake steering vectors into a model already loaded in memory.

Same rules as the file-level export (:mod:`caa_bake.bake.architectures`): the Llama family gets
``mlp_bias = True`` and zero gate/up/down biases in every layer, with the steered
``down_proj.bias`` = m·v (Granite: / ``residual_multiplier``); GPT-2, GPT-NeoX and OPT add to
their existing bias. The model then saves (``save_pretrained``) as a checkpoint that reloads
with every bias. Mistral and Qwen2 are refused here: their classes have no MLP bias, so a
saved model would silently lose it; the file-level export converts them to Llama instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from caa_bake import __version__
from caa_bake.bake.architectures import BakeRule, rule_for
from caa_bake.bake.bakes import Bake
from caa_bake.bake.export import CONFIG_KEY, EXPORT_FORMAT
from caa_bake.bake.plan import sum_deltas
from caa_bake.core import CaaBakeError
from caa_bake.models import hidden_size, num_layers

__all__ = ["bake_in_memory"]


def _linear(model: nn.Module, path: str) -> nn.Module:
    try:
        module = model.get_submodule(path)
    except AttributeError:
        raise CaaBakeError(f"the model has no module {path}") from None
    if not isinstance(getattr(module, "weight", None), torch.Tensor):
        raise CaaBakeError(f"{path} has no weight")
    return module


def _ensure_bias(module: nn.Module) -> nn.Parameter:
    """The module's bias, created as zeros (weight's dtype/device) if it has none."""
    bias = getattr(module, "bias", None)
    if isinstance(bias, nn.Parameter):
        return bias
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    size = getattr(module, "out_features", weight.shape[0])
    new = nn.Parameter(
        torch.zeros(int(size), dtype=weight.dtype, device=weight.device),
        requires_grad=weight.requires_grad,
    )
    module.bias = new
    return new


@torch.no_grad()
def bake_in_memory(model: nn.Module, bakes: Sequence[Bake]) -> BakeRule:
    """Add the bakes' biases to ``model`` in place; record provenance in ``model.config``.

    Args:
        model: a transformers causal LM of a supported architecture.
        bakes: steering terms; several at one layer add up.

    Returns:
        The rule that was applied.

    Raises:
        CaaBakeError: unsupported or converting architecture, layer out of range, vector of
            the wrong size, or a model that is already baked.
    """
    config: Any = getattr(model, "config", None)
    if config is None:
        raise CaaBakeError("the model has no config: not a transformers model")
    if getattr(config, CONFIG_KEY, None):
        raise CaaBakeError("the model is already baked; bake into the original model instead")
    rule = rule_for(config.to_dict())
    if rule.converts:
        raise CaaBakeError(
            f"cannot bake {rule.model_type} in memory: its classes have no MLP bias, so the "
            "bias would be lost on save; use `caa-bake export`, which writes a Llama checkpoint"
        )
    n_layers = num_layers(config)
    deltas = sum_deltas(bakes, n_layers, hidden_size(config))
    scale = rule.scale(config.to_dict())
    names = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    steered = {layer: rule.steer_slot(layer, names) for layer in deltas}
    for layer in range(n_layers):
        for slot in rule.zero_biases:
            _ensure_bias(_linear(model, slot.module(layer)))
    for key, value in rule.config_updates.items():
        setattr(config, key, value)
    for layer, slot in sorted(steered.items()):
        bias = _ensure_bias(_linear(model, slot.module(layer)))
        total = bias.detach().to(torch.float32).cpu() + deltas[layer] * scale
        bias.copy_(total.to(bias.dtype))
    setattr(
        config,
        CONFIG_KEY,
        {
            "format": EXPORT_FORMAT,
            "tool": f"caa-bake {__version__}",
            "rule": rule.name,
            "source": {
                "model_id": str(getattr(config, "_name_or_path", "") or ""),
                "model_type": rule.model_type,
            },
            "bakes": [b.record() for b in bakes],
            "biases": {
                "scale": scale,
                "steered": {str(k): s.names(k)[0] for k, s in sorted(steered.items())},
                "delta_norm": {str(k): float(v.norm()) for k, v in sorted(deltas.items())},
            },
            "files": None,
        },
    )
    return rule
