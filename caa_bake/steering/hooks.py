"""Runtime steering with forward hooks (for verification and baselines, not for export).

``add_to_block_outputs(model, {L: v})`` adds ``v`` to the output of decoder block ``L``
while the context is open. With ``start=None`` every position is steered (what a baked
bias does); with ``start=S`` only positions ``>= S`` are (the CAA reference: from the end
of the instruction onward, every generated token included).

Positions are absolute token indices: the hook reads the ``position_ids`` (or
``cache_position``) the model passes to its blocks, so generation with a KV cache steers
new tokens correctly. Blocks that get neither are assumed to see positions ``0..T-1``
(a forward pass without cache). Block outputs may be a tensor (transformers v5) or a tuple
whose first element is the hidden states (older versions); both are handled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from caa_bake.core import CaaBakeError
from caa_bake.models import decoder_blocks
from caa_bake.steering.vector import SteeringVector

__all__ = ["add_to_block_outputs", "steering"]


def _positions(kwargs: Mapping[str, Any], hidden: torch.Tensor) -> torch.Tensor:
    """Absolute positions of ``hidden``'s tokens, shaped to broadcast as ``[B, T]``."""
    for key in ("position_ids", "cache_position"):
        value = kwargs.get(key)
        if isinstance(value, torch.Tensor) and value.shape[-1] == hidden.shape[-2]:
            return value if value.ndim == 2 else value.unsqueeze(0)
    return torch.arange(hidden.shape[-2], device=hidden.device).unsqueeze(0)


def _make_hook(vector: torch.Tensor, start: int | None) -> Any:
    def hook(
        _module: nn.Module, _args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        if not isinstance(hidden, torch.Tensor):
            raise TypeError(f"unexpected decoder block output {type(output).__name__}")
        add = vector.to(dtype=hidden.dtype, device=hidden.device)
        if start is None or start <= 0:
            steered = hidden + add
        else:
            mask = (_positions(kwargs, hidden) >= start).to(device=hidden.device)
            steered = torch.where(mask.unsqueeze(-1), hidden + add, hidden)
        if isinstance(output, tuple):
            return (steered, *output[1:])
        return steered

    return hook


@contextlib.contextmanager
def add_to_block_outputs(
    model: nn.Module, vectors: Mapping[int, torch.Tensor], *, start: int | None = None
) -> Iterator[None]:
    """Add ``vectors[L]`` to the output of decoder block ``L`` inside the ``with`` block.

    Args:
        model: a transformers causal LM.
        vectors: block index -> 1-D tensor of the hidden size (already multiplied).
        start: steer only absolute positions ``>= start``; None steers every position.

    Raises:
        CaaBakeError: a block index is out of range or a vector has the wrong size.
    """
    blocks = decoder_blocks(model)
    handles = []
    try:
        for layer, vector in sorted(vectors.items()):
            if not 0 <= layer < len(blocks):
                raise CaaBakeError(f"layer {layer} is out of range (0-{len(blocks) - 1})")
            if vector.ndim != 1:
                raise CaaBakeError(f"layer {layer}: steering vector must be 1-D")
            hook = _make_hook(vector.detach(), start)
            handles.append(blocks[layer].register_forward_hook(hook, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def steering(
    model: nn.Module,
    vector: SteeringVector,
    multiplier: float = 1.0,
    *,
    start: int | None = None,
) -> contextlib.AbstractContextManager[None]:
    """``with steering(model, v, 1.0):`` adds ``multiplier x v`` at every layer ``v`` has."""
    scaled = vector * multiplier
    return add_to_block_outputs(model, dict(scaled.layers), start=start)
