"""Reference-position steering for batched, padded lm-eval forward passes.

The CAA reference adds the vector from the end of the instruction onward. In an A/B
evaluation prompt that region is a fixed token sequence at the end of every prompt, the
*tail*: from the instruction's last token to the prefilled ``(`` (SmolLM2: ``\\n (``;
Llama-2: ``] ▁(``). lm-eval pads rows on the right with arbitrary ids and passes no
attention mask or positions, so one start position cannot serve a batch (which is all
:func:`caa_bake.steering.hooks.add_to_block_outputs` offers). Here a pre-hook on the model reads
each row's ``input_ids``, finds the **last** occurrence of the tail in that row, and the
block hooks steer that row from there on (positions after the tail are padding or the
scored continuation, which the reference steers too).

Only whole-sequence forward passes are supported (loglikelihood requests), not cached
generation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from caa_bake.core import CaaBakeError
from caa_bake.models import PromptStyle, answer_format, decoder_blocks, encode_prompt, eval_prefix

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["steer_from_tail", "steering_tail", "tail_starts"]

_PROBE = "Which one?\n\nChoices:\n(A) Yes\n(B) No"


def steering_tail(tokenizer: PreTrainedTokenizerBase, style: PromptStyle) -> list[int]:
    """Token ids from the end of the instruction to the end of an eval prompt (its prefill)."""
    prefix = eval_prefix(answer_format(tokenizer, style))
    enc = encode_prompt(tokenizer, _PROBE, prefix, style=style)
    return enc.input_ids[enc.instruction_end_index :]


def tail_starts(input_ids: torch.Tensor, tail: Sequence[int]) -> torch.Tensor:
    """Per row of ``input_ids`` ``[B, T]``, the index where the last occurrence of ``tail`` starts.

    Raises:
        CaaBakeError: a row does not contain the tail (not an A/B evaluation prompt).
    """
    k = len(tail)
    if k == 0:
        raise CaaBakeError("empty steering tail")
    batch, length = input_ids.shape
    if length < k:
        raise CaaBakeError("a steered sequence is shorter than the instruction tail")
    want = torch.tensor(list(tail), dtype=input_ids.dtype, device=input_ids.device)
    hits = (input_ids.unfold(1, k, 1) == want).all(dim=-1)  # [B, T - k + 1]
    if not bool(hits.any(dim=1).all()):
        raise CaaBakeError(
            "reference-position steering: a prompt does not contain the end-of-instruction "
            "tokens; it was not built like caa_bake.models.prompts.encode_prompt(..., '(')"
        )
    index = torch.arange(hits.shape[1], device=input_ids.device).expand(batch, -1)
    return torch.where(hits, index, torch.full_like(index, -1)).max(dim=1).values


@contextlib.contextmanager
def steer_from_tail(
    model: nn.Module, vectors: Mapping[int, torch.Tensor], tail: Sequence[int]
) -> Iterator[None]:
    """Add ``vectors[L]`` to block ``L``'s output from each row's tail onward.

    Args:
        model: a transformers causal LM, called with ``input_ids`` (positional or keyword).
        vectors: block index -> 1-D tensor of the hidden size (already multiplied).
        tail: :func:`steering_tail` of the model's tokenizer and prompt style.
    """
    blocks = decoder_blocks(model)
    state: dict[str, torch.Tensor] = {}

    def before(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(ids, torch.Tensor) or ids.ndim != 2:
            raise CaaBakeError("reference-position steering needs input_ids of shape [B, T]")
        starts = tail_starts(ids, tail)
        positions = torch.arange(ids.shape[1], device=ids.device)
        state["mask"] = positions.unsqueeze(0) >= starts.unsqueeze(1)

    def make_hook(vector: torch.Tensor) -> Any:
        def hook(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
            hidden = output[0] if isinstance(output, tuple) else output
            mask = state["mask"].to(hidden.device).unsqueeze(-1).to(hidden.dtype)
            steered = hidden + mask * vector.to(device=hidden.device, dtype=hidden.dtype)
            return (steered, *output[1:]) if isinstance(output, tuple) else steered

        return hook

    handles = [model.register_forward_pre_hook(before, with_kwargs=True)]
    try:
        for layer, vector in sorted(vectors.items()):
            if not 0 <= layer < len(blocks):
                raise CaaBakeError(f"layer {layer} is out of range (0-{len(blocks) - 1})")
            handles.append(blocks[layer].register_forward_hook(make_hook(vector.detach())))
        yield
    finally:
        for handle in handles:
            handle.remove()
