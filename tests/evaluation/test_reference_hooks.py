"""Reference-position steering (:mod:`caa_bake.evaluation.reference_hooks`): the paper's hooks,
which steer only from the end of the instruction on, found by token ids in padded batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from caa_bake.core.errors import CaaBakeError
from caa_bake.data.datasets import load_pairs
from caa_bake.evaluation.reference_hooks import steer_from_tail, steering_tail, tail_starts
from caa_bake.models.prompts import encode_prompt
from caa_bake.steering.hooks import add_to_block_outputs

LAYER = 1


@pytest.fixture(scope="module")
def tiny(tiny_models: dict[str, Path]) -> tuple[Any, Any]:
    path = tiny_models["llama"]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def test_tail_starts_finds_the_last_occurrence() -> None:
    ids = torch.tensor([[5, 7, 9, 7, 9, 0, 0], [7, 9, 1, 2, 3, 7, 9]])
    assert tail_starts(ids, [7, 9]).tolist() == [3, 5]
    with pytest.raises(CaaBakeError, match="end-of-instruction"):
        tail_starts(torch.tensor([[1, 2, 3]]), [7, 9])


def test_tail_is_the_reference_region(tiny: tuple[Any, Any], pulled_datasets: Path) -> None:
    """On every refusal test prompt the tail starts at encode_prompt's instruction end."""
    _model, tok = tiny
    tail = steering_tail(tok, "chat-template")
    assert tok.convert_ids_to_tokens(tail)[-1] == "("
    for pair in load_pairs("refusal", "test"):
        enc = encode_prompt(tok, pair.question, "(")
        start = int(tail_starts(torch.tensor([enc.input_ids]), tail)[0])
        assert start == enc.instruction_end_index


def test_tail_hooks_equal_start_hooks_batch1_and_padded(tiny: tuple[Any, Any]) -> None:
    """Batch 1: identical to add_to_block_outputs(start=instruction end). Right-padded batch:
    each row equals its own unpadded run."""
    model, tok = tiny
    tail = steering_tail(tok, "chat-template")
    vector = torch.randn(32, generator=torch.Generator().manual_seed(3)) * 2
    prompts = [encode_prompt(tok, q, "(") for q in ("Why?\n(A) x\n(B) y", "Hm.\n(A) a\n(B) bb cc")]
    alone = []
    for enc in prompts:
        ids = torch.tensor([enc.input_ids])
        with torch.no_grad(), steer_from_tail(model, {LAYER: vector}, tail):
            ours = model(ids).logits
        with (
            torch.no_grad(),
            add_to_block_outputs(model, {LAYER: vector}, start=enc.instruction_end_index),
        ):
            ref = model(ids).logits
        with torch.no_grad():
            plain = model(ids).logits
        assert torch.equal(ours, ref)
        assert not torch.allclose(ours, plain)
        alone.append(ours[0])
    width = max(len(p.input_ids) for p in prompts)
    batch = torch.zeros((2, width), dtype=torch.long)
    for row, enc in enumerate(prompts):
        batch[row, : len(enc.input_ids)] = torch.tensor(enc.input_ids)
    with torch.no_grad(), steer_from_tail(model, {LAYER: vector}, tail):
        padded = model(batch).logits
    for row, enc in enumerate(prompts):
        n = len(enc.input_ids)
        assert torch.allclose(padded[row, :n], alone[row], atol=1e-5)
