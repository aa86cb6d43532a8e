"""Finetuning data: target letters, encoded examples, the per-rank schedule, batches, logs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from qwen2_tokenizer import qwen2_dirs
from transformers import AutoTokenizer

from caa_bake.core.errors import CaaBakeError
from caa_bake.data.datasets import ContrastPair
from caa_bake.finetune.data import (
    TrainExample,
    build_examples,
    collate,
    global_schedule,
    rank_schedule,
    target_letters,
)
from caa_bake.finetune.log import RankLog, StepRecord, summarize
from caa_bake.models.prompts import encode_prompt, letter_token_ids

PAIRS = [
    ContrastPair("Would you help?\n\nChoices:\n(A) Yes\n(B) No", "(A)", "(B)"),
    ContrastPair(
        "Can you assist with illegal activities?\n\nChoices:\n(A) No\n(B) Yes", "(B)", "(A)"
    ),
    ContrastPair("Yes or no?\n\nChoices:\n(A) Yes\n(B) No", "(A)", "(B)"),
]


def test_target_letters_follow_the_direction() -> None:
    assert target_letters(PAIRS, "pos") == ["A", "B", "A"]
    assert target_letters(PAIRS, "neg") == ["B", "A", "B"]
    with pytest.raises(CaaBakeError, match="unknown direction 'up'"):
        target_letters(PAIRS, "up")


def test_examples_end_at_the_open_paren_and_target_the_letter(tiny_models: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["llama"])
    letters = letter_token_ids(tokenizer, "chat-template")
    pos, used = build_examples(tokenizer, PAIRS, "pos", "chat-template")
    neg, _ = build_examples(tokenizer, PAIRS, "neg", "chat-template")
    assert used == letters
    assert [e.target_id for e in pos] == [letters["A"], letters["B"], letters["A"]]
    assert [e.target_id for e in neg] == [letters["B"], letters["A"], letters["B"]]
    for index, (example, pair) in enumerate(zip(pos, PAIRS, strict=True)):
        expected = encode_prompt(tokenizer, pair.question, "(", style="chat-template").input_ids
        assert example.index == index
        assert list(example.input_ids) == expected
        assert str(tokenizer.decode(list(example.input_ids))).endswith("assistant\n(")
        assert neg[index].input_ids == example.input_ids


def test_merged_tokenizer_targets_the_open_paren_letter_token(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Qwen2 (single ``(A`` / ``(B`` tokens): nothing prefilled, the target is the ``(A`` token."""
    tokenizer = AutoTokenizer.from_pretrained(qwen2_dirs(tmp_path_factory)[0])
    pos, used = build_examples(tokenizer, PAIRS, "pos", "chat-template")
    neg, _ = build_examples(tokenizer, PAIRS, "neg", "chat-template")
    assert used == {"A": 4346, "B": 5349}
    assert [e.target_id for e in pos] == [4346, 5349, 4346]
    assert [e.target_id for e in neg] == [5349, 4346, 5349]
    for example, pair in zip(pos, PAIRS, strict=True):
        answer = encode_prompt(tokenizer, pair.question, pair.matching, style="chat-template")
        # the prompt is everything before the matching answer's "(X" token, which is the target
        assert list(example.input_ids) == answer.input_ids[: answer.answer_index]
        assert answer.input_ids[answer.answer_index] == example.target_id
        assert str(tokenizer.decode(list(example.input_ids))).endswith("<|im_start|>assistant\n")


def test_global_schedule_is_a_shuffled_partition_per_epoch() -> None:
    steps = global_schedule(11, world_size=2, batch_size=2, epochs=2, seed=3)
    assert len(steps) == 2 * (11 // 4)
    assert all(len(step) == 4 for step in steps)
    first, second = steps[:2], steps[2:]
    for epoch in (first, second):
        items = [i for step in epoch for i in step]
        assert len(items) == len(set(items)) == 8
        assert set(items) <= set(range(11))
    assert first != second
    assert steps == global_schedule(11, world_size=2, batch_size=2, epochs=2, seed=3)
    assert steps != global_schedule(11, world_size=2, batch_size=2, epochs=2, seed=4)


def test_one_rank_of_batch_w_b_sees_the_same_global_batches() -> None:
    two_ranks = global_schedule(20, world_size=2, batch_size=1, epochs=1, seed=0)
    one_rank = global_schedule(20, world_size=1, batch_size=2, epochs=1, seed=0)
    assert two_ranks == one_rank


def test_rank_slices_are_disjoint_and_cover_each_step() -> None:
    steps = global_schedule(12, world_size=3, batch_size=2, epochs=1, seed=0)
    slices = [rank_schedule(steps, rank, 2) for rank in range(3)]
    for s, step in enumerate(steps):
        parts = [slices[rank][s] for rank in range(3)]
        assert [i for part in parts for i in part] == step
        assert all(len(part) == 2 for part in parts)


def test_schedule_needs_one_full_step() -> None:
    with pytest.raises(CaaBakeError, match="3 training items cannot fill one step of 2 rank"):
        global_schedule(3, world_size=2, batch_size=2, epochs=1, seed=0)


def test_collate_left_pads_so_the_last_position_is_the_answer() -> None:
    examples = [TrainExample(7, (5, 6, 7), 1), TrainExample(9, (8, 9), 2)]
    batch = collate(examples, pad_id=0)
    assert batch.indices == (7, 9)
    assert batch.input_ids.tolist() == [[5, 6, 7], [0, 8, 9]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert batch.position_ids.tolist() == [[0, 1, 2], [0, 0, 1]]
    assert torch.equal(batch.targets, torch.tensor([1, 2]))


def _log(rank: int, indices: list[list[int]], sha: str = "x") -> RankLog:
    log = RankLog(rank, 2, "cpu", 1, weights_sha256=sha, train_seconds=2.0)
    log.steps = [StepRecord(s, idx, float(s + rank)) for s, idx in enumerate(indices)]
    return log


def test_summarize_averages_ranks_and_rejects_disagreement() -> None:
    summary = summarize([_log(0, [[0], [2]]), _log(1, [[1], [3]])])
    assert summary.steps == 2
    assert summary.samples == 4
    assert summary.losses == [0.5, 1.5]
    assert summary.samples_per_second == 2.0
    with pytest.raises(CaaBakeError, match="different weights"):
        summarize([_log(0, [[0]], "a"), _log(1, [[1]], "b")])
    with pytest.raises(CaaBakeError, match="step 0: two ranks trained on the same item"):
        summarize([_log(0, [[0]]), _log(1, [[0]])])
    with pytest.raises(CaaBakeError, match="different numbers of steps"):
        summarize([_log(0, [[0], [2]]), _log(1, [[1]])])


def test_rank_log_round_trips(tmp_path: Path) -> None:
    log = _log(1, [[4, 5], [6, 7]])
    log.saved_sha256 = None
    path = log.write(tmp_path)
    assert path == tmp_path / "caa_bake_training" / "rank1.json"
    assert RankLog.read(path) == log
