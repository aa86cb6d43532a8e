"""CAA vector extraction: mean over pairs of (matching - non-matching) block outputs.

For every contrast pair both prompts end in a prefilled answer, ``(A)`` or ``(B)``. The
residual stream after decoder block ``L`` is read at the token holding the answer letter.
Batched with padding; all requested layers come from one forward pass that stops right
after the deepest requested block (no later blocks, no ``lm_head``).

The two prompts of a pair are identical up to the answer letter, so by default the shared
prefix runs once (filling a KV cache up to the deepest block) and only the short answer
suffixes run twice (``share_prefix=False`` runs both full prompts instead; same result).
The head every prompt of the run starts with (the chat template's system prompt and user
header: 22 of SmolLM2's ~125 prefix tokens) runs once per extraction, not once per batch.
Tokens after the answer letter never influence it (causal attention) and are not run.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedTokenizerBase

from caa_bake.core import progress
from caa_bake.data import ContrastPair
from caa_bake.models import EncodedPrompt, PromptStyle, decoder_blocks, encode_prompt, pad_batch

__all__ = [
    "POSITION_RULE",
    "ExtractionResult",
    "block_outputs_at",
    "cache_kwargs",
    "extract_vectors",
]

POSITION_RULE = (
    "residual stream after decoder block L (hidden_states[L+1]) at the token holding the "
    "answer letter of the prefilled assistant answer '(X)'"
)


class _StopForward(Exception):
    """Raised by the deepest hook to end the forward pass early."""


@dataclass(frozen=True)
class ExtractionResult:
    """Per-layer mean differences (float32) and the number of pairs behind them.

    ``activations`` (only with ``extract_vectors(..., keep=True)``): per layer a float32
    ``[num_pairs, 2, hidden]`` tensor, pairs in input order, ``[:, 0]`` the matching side.
    """

    vectors: dict[int, torch.Tensor]
    num_pairs: int
    activations: dict[int, torch.Tensor] | None = None


def _block_output(output: object) -> torch.Tensor:
    """Decoder blocks return a tensor (transformers >= 4.54) or a tuple whose first item is it."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"unexpected decoder block output type {type(output).__name__}")


def cache_kwargs(model: nn.Module, cache: DynamicCache | None) -> dict[str, object]:
    """The keyword that passes a KV cache to ``model``'s forward.

    transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name still works but
    prints a FutureWarning on every call); older 5.x releases only know ``past_key_values``.
    """
    params = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


def block_outputs_at(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    positions: Sequence[int],
    layers: Sequence[int],
    past_key_values: DynamicCache | None = None,
) -> dict[int, torch.Tensor]:
    """Block outputs of ``layers`` at one position per sequence, as float32 ``[batch, hidden]``.

    The forward pass is cut short after the deepest requested block. With
    ``past_key_values`` the sequences continue the cached prefix (and extend the cache).
    """
    blocks = decoder_blocks(model)
    deepest = max(layers)
    rows = torch.arange(input_ids.shape[0])
    cols = torch.tensor(list(positions))
    captured: dict[int, torch.Tensor] = {}

    def make_hook(layer: int):  # type: ignore[no-untyped-def]
        def hook(_module: nn.Module, _args: object, output: object) -> None:
            hidden = _block_output(output)
            captured[layer] = hidden[rows, cols.to(hidden.device)].detach().float().cpu()
            if layer == deepest:
                raise _StopForward

        return hook

    handles = [blocks[layer].register_forward_hook(make_hook(layer)) for layer in set(layers)]
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                position_ids=position_ids.to(device),
                use_cache=past_key_values is not None,
                **cache_kwargs(model, past_key_values),
            )
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _encode_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[ContrastPair], style: PromptStyle | None
) -> list[tuple[EncodedPrompt, EncodedPrompt]]:
    return [
        (
            encode_prompt(tokenizer, pair.question, pair.matching, style=style),
            encode_prompt(tokenizer, pair.question, pair.not_matching, style=style),
        )
        for pair in pairs
    ]


def _split_pair(match: EncodedPrompt, other: EncodedPrompt) -> tuple[list[int], list[list[int]]]:
    """Shared prefix and the two suffixes, each suffix ending at (and holding) its answer token."""
    ids = (match.input_ids[: match.answer_index + 1], other.input_ids[: other.answer_index + 1])
    limit = min(len(ids[0]), len(ids[1])) - 1  # every suffix keeps at least its answer token
    common = 0
    while common < limit and ids[0][common] == ids[1][common]:
        common += 1
    return ids[0][:common], [ids[0][common:], ids[1][common:]]


@dataclass
class _Head:
    """The token prefix every prompt of a run shares (system prompt, chat-template head):
    run once, its KV cache (up to the deepest block) copied into every batch."""

    ids: list[int]
    cache: DynamicCache


def _common_head(prefixes: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix shared by all ``prefixes``, one token short of the shortest
    (every row keeps a token of its own to run)."""
    head = list(prefixes[0])
    for ids in prefixes[1:]:
        n = 0
        while n < len(head) and n < len(ids) and head[n] == ids[n]:
            n += 1
        del head[n:]
    shortest = min(len(ids) for ids in prefixes)
    return head[: max(0, shortest - 1)]


def _run_head(model: nn.Module, ids: list[int], layers: Sequence[int]) -> _Head:
    cache = DynamicCache(config=getattr(model, "config", None))
    tokens = torch.tensor([ids], dtype=torch.long)
    ones = torch.ones_like(tokens)
    positions = torch.arange(len(ids))[None, :]
    block_outputs_at(model, tokens, ones, positions, [0], [max(layers)], past_key_values=cache)
    return _Head(ids, cache)


def _shared_prefix_acts(
    model: nn.Module,
    splits: Sequence[tuple[list[int], list[list[int]]]],
    pad_id: int,
    layers: Sequence[int],
    head: _Head | None = None,
) -> dict[int, torch.Tensor]:
    """Answer-token block outputs for pairs split by :func:`_split_pair` (rows: match, other,
    match, ...) via a KV cache.

    Prefixes run once, left-padded (so every row's cache ends at the same column); then the
    cache is duplicated per pair and both suffixes run on top of it, right-padded. With a
    ``head`` (tokens every prefix starts with, already cached) only the rest of each prefix
    runs: after the head's columns, left-padded, positions continuing the head's.
    """
    skip = 0 if head is None else len(head.ids)
    prefixes = [EncodedPrompt(prefix[skip:], len(prefix) - skip - 1, 0) for prefix, _ in splits]
    ids, mask, pos, last = pad_batch(prefixes, pad_id, "left")
    if head is None:
        cache = DynamicCache(config=getattr(model, "config", None))
    else:
        cache = copy.deepcopy(head.cache)
        cache.batch_repeat_interleave(len(splits))
        mask = torch.cat([torch.ones((len(splits), skip), dtype=mask.dtype), mask], dim=1)
        pos = pos + skip
    block_outputs_at(model, ids, mask, pos, last, [max(layers)], past_key_values=cache)
    cache.batch_repeat_interleave(2)

    suffixes = [suffix for _, pair in splits for suffix in pair]
    width = max(len(s) for s in suffixes)
    suf_ids = torch.full((len(suffixes), width), pad_id, dtype=torch.long)
    suf_mask = torch.zeros((len(suffixes), width), dtype=torch.long)
    for row, suffix in enumerate(suffixes):
        suf_ids[row, : len(suffix)] = torch.tensor(suffix, dtype=torch.long)
        suf_mask[row, : len(suffix)] = 1
    prefix_len = mask.sum(dim=1).repeat_interleave(2)
    suf_pos = prefix_len[:, None] + torch.arange(width)[None, :]
    full_mask = torch.cat([mask.repeat_interleave(2, dim=0), suf_mask], dim=1)
    answers = [len(s) - 1 for s in suffixes]
    return block_outputs_at(
        model, suf_ids, full_mask, suf_pos, answers, layers, past_key_values=cache
    )


def extract_vectors(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[ContrastPair],
    layers: Sequence[int],
    *,
    batch_size: int = 16,
    padding_side: Literal["left", "right"] = "right",
    style: PromptStyle | None = None,
    share_prefix: bool = True,
    share_head: bool = True,
    desc: str = "extracting",
    keep: bool = False,
) -> ExtractionResult:
    """Mean (matching - non-matching) block output per layer over ``pairs``.

    Args:
        model: a transformers causal LM (eval mode).
        tokenizer: its tokenizer.
        pairs: the contrast pairs.
        layers: 0-based block indices.
        batch_size: pairs per forward pass (each pair contributes two sequences).
        padding_side: ``"right"`` or ``"left"``; results are the same either way.
        style: prompt style override (default: detected from the tokenizer).
        share_prefix: run each pair's common prefix once (KV cache); ``padding_side`` then
            only applies when this is off.
        share_head: with ``share_prefix``, also run the head every prompt starts with (the
            chat template's system prompt and user header) once per call instead of once per
            batch. Off only to measure what it saves (``benchmarks/extract.py``).
        desc: progress-bar label.
        keep: also return every pair's two activations (``ExtractionResult.activations``).

    Returns:
        float32 vectors ``[hidden_size]`` per layer, the pair count (and the activations).
    """
    if not pairs:
        raise ValueError("no contrast pairs")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if padding_side not in ("left", "right"):
        raise ValueError("padding_side must be 'left' or 'right'")
    encoded = _encode_pairs(tokenizer, pairs, style)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    # longest first: similar lengths share a batch, and memory peaks on the first batch
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0].input_ids))
    head = None
    splits = [_split_pair(m, o) for m, o in encoded] if share_prefix else []
    if share_prefix and share_head:
        head_ids = _common_head([prefix for prefix, _ in splits])
        if head_ids:
            head = _run_head(model, head_ids, layers)
    sums: dict[int, torch.Tensor] = {}
    kept: dict[int, torch.Tensor] = {}
    starts = range(0, len(order), batch_size)
    for start in progress(starts, desc=desc, total=len(starts), unit="batch"):
        batch = order[start : start + batch_size]
        if share_prefix:
            acts = _shared_prefix_acts(model, [splits[i] for i in batch], pad_id, layers, head)
        else:
            chunk = [encoded[i] for i in batch]
            prompts = [p for pair in chunk for p in pair]  # matching, other, matching, ...
            ids, mask, pos_ids, answer_pos = pad_batch(prompts, pad_id, padding_side)
            acts = block_outputs_at(model, ids, mask, pos_ids, answer_pos, layers)
        rows = torch.tensor(batch)
        for layer, act in acts.items():
            diff = (act[0::2] - act[1::2]).double().sum(dim=0)
            sums[layer] = sums[layer] + diff if layer in sums else diff
            if keep:
                if layer not in kept:
                    kept[layer] = torch.zeros(len(encoded), 2, act.shape[-1])
                kept[layer][rows] = torch.stack([act[0::2], act[1::2]], dim=1)
    n = len(encoded)
    vectors = {layer: (sums[layer] / n).float() for layer in layers}
    return ExtractionResult(vectors, n, {layer: kept[layer] for layer in layers} if keep else None)
