"""Training data of the finetuning baseline: encoded prompts, per-rank schedule, batches.

Each generate-split item becomes one example: the A/B evaluation prompt of
:mod:`caa_bake.models.prompts` (the assistant turn prefilled with ``(``, or with nothing when the
tokenizer merges ``(A`` into one token) and a target token, the matching answer for ``pos`` or
the non-matching one for ``neg``: the letter, or the ``(A`` token when merged. The loss is the
cross-entropy of the next-token distribution at the end of the prompt against that token.

Sharding: every epoch is one shuffled order of all items (seeded with ``seed + epoch``, the
same on every rank). Global step ``s`` takes the next ``world_size x batch_size`` items of
that order and rank ``r`` gets the ``r``-th slice of ``batch_size`` of them, so the ranks
never share an item within an epoch, and a run with ``W`` ranks of batch ``b`` sees exactly
the same global batches as one rank of batch ``W x b``. Items that do not fill a whole
global step at the end of an epoch are left out of that epoch (a different set each epoch).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from caa_bake.core import CaaBakeError
from caa_bake.data import ContrastPair
from caa_bake.models import (
    EncodedPrompt,
    PromptStyle,
    answer_format,
    encode_prompt,
    eval_prefix,
    letter_token_ids,
    pad_batch,
)

__all__ = [
    "Batch",
    "TrainExample",
    "build_examples",
    "collate",
    "global_schedule",
    "rank_schedule",
    "target_letters",
]


@dataclass(frozen=True)
class TrainExample:
    """One training item: the evaluation prompt's token ids and the target token."""

    index: int
    input_ids: tuple[int, ...]
    target_id: int


@dataclass(frozen=True)
class Batch:
    """A left-padded batch: the answer is read at the last position of every row."""

    indices: tuple[int, ...]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor


def target_letters(pairs: Sequence[ContrastPair], direction: str) -> list[str]:
    """The target letter of each pair (``"A"`` for ``"(A)"``): matching for pos, else the other."""
    if direction not in ("pos", "neg"):
        raise CaaBakeError(f"unknown direction '{direction}'; valid: pos, neg")
    return [(p.matching if direction == "pos" else p.not_matching)[1:-1] for p in pairs]


def build_examples(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[ContrastPair],
    direction: str,
    style: PromptStyle,
) -> tuple[list[TrainExample], dict[str, int]]:
    """Encode every pair; returns the examples and the letter -> token id map used.

    Raises CaaBakeError when a target answer is not a single next token of the evaluation
    prompt (then the single-token objective is not defined for this tokenizer).
    """
    targets = target_letters(pairs, direction)
    answer = answer_format(tokenizer, style)
    letters = letter_token_ids(tokenizer, style, letters=sorted(set(targets)), answer=answer)
    prefix = eval_prefix(answer)
    examples = []
    for index, (pair, letter) in enumerate(zip(pairs, targets, strict=True)):
        prompt: EncodedPrompt = encode_prompt(tokenizer, pair.question, prefix, style=style)
        if prompt.answer_index != len(prompt.input_ids) - 1:
            raise CaaBakeError(f"item {index}: the prompt does not end where the answer starts")
        examples.append(TrainExample(index, tuple(prompt.input_ids), letters[letter]))
    return examples, letters


def global_schedule(
    n_items: int, *, world_size: int, batch_size: int, epochs: int, seed: int
) -> list[list[int]]:
    """Item indices of every global step, in order (``world_size x batch_size`` per step)."""
    per_step = world_size * batch_size
    if n_items < per_step:
        raise CaaBakeError(
            f"{n_items} training items cannot fill one step of {world_size} rank(s) x batch "
            f"{batch_size}; use fewer ranks or a smaller --batch-size"
        )
    steps: list[list[int]] = []
    for epoch in range(epochs):
        order = list(range(n_items))
        random.Random(seed + epoch).shuffle(order)
        whole = n_items - n_items % per_step
        steps += [order[start : start + per_step] for start in range(0, whole, per_step)]
    return steps


def rank_schedule(steps: Sequence[Sequence[int]], rank: int, batch_size: int) -> list[list[int]]:
    """Rank ``rank``'s slice of each global step."""
    lo, hi = rank * batch_size, (rank + 1) * batch_size
    return [list(step[lo:hi]) for step in steps]


def collate(examples: Sequence[TrainExample], pad_id: int) -> Batch:
    """Left-pad ``examples`` into a batch (position ids as if unpadded)."""
    prompts = [
        EncodedPrompt(list(e.input_ids), len(e.input_ids) - 1, len(e.input_ids) - 1)
        for e in examples
    ]
    input_ids, mask, position_ids, _answers = pad_batch(prompts, pad_id, "left")
    targets = torch.tensor([e.target_id for e in examples], dtype=torch.long)
    return Batch(tuple(e.index for e in examples), input_ids, mask, position_ids, targets)
