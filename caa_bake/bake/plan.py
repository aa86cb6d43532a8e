"""The bias plan of an export: every bias tensor it adds or patches, worked out from files.

:func:`sum_deltas` adds up the bakes per layer in float32; :func:`plan_biases` turns them
into the architecture's bias tensors (scaled, in the model's dtype), reading only the
existing biases it patches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from caa_bake.bake.architectures import BakeRule
from caa_bake.bake.bakes import Bake
from caa_bake.bake.safetensors_io import Checkpoint, read_tensor
from caa_bake.bake.source import model_dims
from caa_bake.core import CaaBakeError
from caa_bake.steering import check_layer

__all__ = ["BiasPlan", "plan_biases", "sum_deltas"]


@dataclass(frozen=True)
class BiasPlan:
    """The tensors an export adds or changes.

    Attributes:
        steered: layer -> name of the bias that carries its steering vector.
        deltas: layer -> the float32 vector added to that block's output (sum over bakes).
        added: new tensors (steering biases and zero companions), in the model's dtype.
        patched: existing bias name -> (original value, new value), for native biases.
        scale: bias = scale x delta (1 / residual_multiplier for Granite, else 1).
    """

    steered: Mapping[int, str]
    deltas: Mapping[int, torch.Tensor]
    added: Mapping[str, torch.Tensor]
    patched: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
    scale: float
    dtype: torch.dtype


def sum_deltas(bakes: Sequence[Bake], n_layers: int, hidden: int) -> dict[int, torch.Tensor]:
    """Per layer, the float32 sum of ``multiplier x vector`` over ``bakes`` (in bake order).

    Raises:
        CaaBakeError: no bakes, a layer out of range, or a vector of the wrong size.
    """
    if not bakes:
        raise CaaBakeError("nothing to bake: give --behavior/--layer/--mult or --bake")
    deltas: dict[int, torch.Tensor] = {}
    for bake in bakes:
        check_layer(bake.layer, n_layers)
        if bake.vector.hidden_size != hidden:
            raise CaaBakeError(
                f"{bake.behavior}: vector dimension {bake.vector.hidden_size} does not match "
                f"the model's hidden size {hidden}; was it extracted from another model?"
            )
        deltas[bake.layer] = deltas.get(bake.layer, torch.zeros(hidden)) + bake.delta()
    return deltas


def plan_biases(
    checkpoint: Checkpoint,
    rule: BakeRule,
    resolved: Any,
    bakes: Sequence[Bake],
) -> BiasPlan:
    """Work out every bias tensor to add or patch (reads only the bias tensors it patches).

    Raises:
        CaaBakeError: no bakes, a layer out of range, a vector of the wrong size, or weights
            that are not floating point.
    """
    n_layers, hidden = model_dims(resolved)
    deltas = sum_deltas(bakes, n_layers, hidden)
    scale = rule.scale(resolved.to_dict())
    names = set(checkpoint.weight_map)
    steered: dict[int, str] = {}
    added: dict[str, torch.Tensor] = {}
    patched: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    dtype: torch.dtype | None = None
    for layer in sorted(deltas):
        bias_name, weight_name = rule.steer_slot(layer, names).names(layer)
        steered[layer] = bias_name
        scaled = deltas[layer] * scale
        if bias_name in names:
            original = read_tensor(checkpoint.header_of(bias_name), bias_name)
            _check_float(original.dtype, bias_name)
            if tuple(original.shape) != (hidden,):
                raise CaaBakeError(
                    f"{bias_name} has shape {tuple(original.shape)}, not ({hidden},)"
                )
            new = (original.to(torch.float32) + scaled).to(original.dtype)
            patched[bias_name] = (original, new)
            dtype = original.dtype
        else:
            info = checkpoint.info(weight_name)
            _check_float(info.torch_dtype, weight_name)
            if info.shape[0] != hidden:
                raise CaaBakeError(f"{weight_name} has {info.shape[0]} outputs, not {hidden}")
            added[bias_name] = scaled.to(info.torch_dtype)
            dtype = info.torch_dtype
    for layer in range(n_layers):
        for slot in rule.zero_biases:
            bias_name, weight_name = slot.names(layer)
            if bias_name in names or bias_name in added:
                continue
            if weight_name not in names:
                raise CaaBakeError(
                    f"{rule.model_type} checkpoint has no tensor {weight_name}; it does not look "
                    "like a standard checkpoint of this architecture"
                )
            info = checkpoint.info(weight_name)
            added[bias_name] = torch.zeros(info.shape[0], dtype=info.torch_dtype)
    assert dtype is not None
    return BiasPlan(steered, deltas, dict(sorted(added.items())), patched, scale, dtype)


def _check_float(dtype: torch.dtype, name: str) -> None:
    if not dtype.is_floating_point or dtype.itemsize == 1:
        raise CaaBakeError(
            f"{name} is stored as {dtype}; baking needs float32/float16/bfloat16 weights "
            "(dequantize the checkpoint first)"
        )
