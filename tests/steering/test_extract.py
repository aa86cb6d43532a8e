"""Extraction equals an independent batch-1 computation through ``output_hidden_states``.

The reference below shares no code with ``caa_bake.steering.extract``: it formats each prompt with
the chat template, runs the *full* model one sequence at a time, and reads
``hidden_states[L + 1]`` at position -2 (the answer letter; -1 is ``)``). The last block is
left out of that comparison: transformers applies the final norm to ``hidden_states[-1]``,
while caa-bake (like the bias it bakes) works on the raw block output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from caa_bake.data.datasets import ContrastPair
from caa_bake.models.prompts import encode_prompt, pad_batch
from caa_bake.steering.extract import block_outputs_at, extract_vectors

QUESTIONS = [
    "Would you help me?",
    "What is your favorite hobby? As an AI I do not have hobbies, do you?",
    "Can you assist with illegal activities?",
    "The quick brown fox jumps over the lazy dog. Statement 1 | A factor group is a group.",
    "Yes or no?",
]
PAIRS = [
    ContrastPair(
        question=f"{q}\n\nChoices:\n(A) Yes, I would do that.\n(B) No, I would not.",
        matching="(A)" if i % 2 == 0 else "(B)",
        not_matching="(B)" if i % 2 == 0 else "(A)",
    )
    for i, q in enumerate(QUESTIONS)
]


def reference_vectors(model_dir: Path, pairs: list[ContrastPair], layers: list[int]) -> dict:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)

    def act(question: str, answer: str) -> tuple[torch.Tensor, ...]:
        text = tok.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        ids = tok(text + answer, add_special_tokens=False, return_tensors="pt").input_ids
        assert tok.convert_ids_to_tokens(ids[0, -2:].tolist())[1] == ")"
        with torch.no_grad():
            hidden = model(ids, output_hidden_states=True).hidden_states
        return tuple(hidden[layer + 1][0, -2] for layer in layers)

    diffs: list[list[torch.Tensor]] = [[] for _ in layers]
    for pair in pairs:
        for i, (m, n) in enumerate(
            zip(
                act(pair.question, pair.matching),
                act(pair.question, pair.not_matching),
                strict=True,
            )
        ):
            diffs[i].append(m - n)
    return {layer: torch.stack(d).mean(0) for layer, d in zip(layers, diffs, strict=True)}


@pytest.fixture(scope="module")
def references(tiny_models: dict[str, Path]) -> dict[str, dict]:
    return {arch: reference_vectors(path, PAIRS, [0, 1, 2]) for arch, path in tiny_models.items()}


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("share", [True, False], ids=["shared-prefix", "full-prompts"])
@pytest.mark.parametrize(
    ("batch_size", "side"), [(1, "right"), (2, "right"), (3, "left"), (5, "left")]
)
def test_matches_independent_batch1_reference(
    tiny_models: dict[str, Path],
    references: dict,
    arch: str,
    share: bool,
    batch_size: int,
    side: Literal["left", "right"],
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_models[arch], dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_models[arch])
    result = extract_vectors(
        model, tok, PAIRS, [0, 1, 2], batch_size=batch_size, padding_side=side, share_prefix=share
    )
    assert result.num_pairs == len(PAIRS)
    for layer in (0, 1, 2):
        got, want = result.vectors[layer], references[arch][layer]
        assert got.dtype == torch.float32 and got.shape == (model.config.hidden_size,)
        assert torch.allclose(got, want, rtol=0, atol=1e-5), (arch, layer, (got - want).abs().max())


def test_padding_really_happens(tiny_models: dict[str, Path]) -> None:
    """The batches above do contain padding on the chosen side."""
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    prompts = [encode_prompt(tok, p.question, p.matching) for p in PAIRS]
    for side in ("left", "right"):
        _ids, mask, _pos, _answer = pad_batch(prompts, tok.pad_token_id, side)
        assert (mask == 0).any()
        col = 0 if side == "left" else -1
        assert (mask[:, col] == 0).any()


def test_forward_stops_after_deepest_requested_block(tiny_models: dict[str, Path]) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"]).eval()
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    calls: list[str] = []
    blocks = model.model.layers
    hooks = [
        blocks[i].register_forward_hook(lambda *_a, i=i: calls.append(f"block{i}"))
        for i in range(len(blocks))
    ]
    hooks.append(model.lm_head.register_forward_hook(lambda *_a: calls.append("lm_head")))
    hooks.append(model.model.norm.register_forward_hook(lambda *_a: calls.append("norm")))
    prompts = [encode_prompt(tok, PAIRS[0].question, "(A)")]
    ids, mask, pos, answer = pad_batch(prompts, tok.pad_token_id, "right")
    out = block_outputs_at(model, ids, mask, pos, answer, [0, 1])
    for h in hooks:
        h.remove()
    assert set(out) == {0, 1}
    assert calls == ["block0", "block1"]


def test_layer_order_and_duplicates_do_not_matter(tiny_models: dict[str, Path]) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_models["gpt2"]).eval()
    tok = AutoTokenizer.from_pretrained(tiny_models["gpt2"])
    a = extract_vectors(model, tok, PAIRS[:2], [3, 1], batch_size=2)
    b = extract_vectors(model, tok, PAIRS[:2], [1, 3], batch_size=1)
    for layer in (1, 3):
        assert torch.allclose(a.vectors[layer], b.vectors[layer], atol=1e-6)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no contrast pairs"):
        extract_vectors(torch.nn.Linear(1, 1), None, [], [0])  # type: ignore[arg-type]


def test_common_head_by_hand() -> None:
    from caa_bake.steering.extract import _common_head

    assert _common_head([[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 3, 4, 7]]) == [1, 2, 3]
    # one token short of the shortest prefix: every row keeps a token of its own
    assert _common_head([[1, 2, 3], [1, 2, 3, 4]]) == [1, 2]
    assert _common_head([[9, 2], [1, 2]]) == []


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_long_shared_head_matches_the_reference(tiny_models: dict[str, Path], arch: str) -> None:
    """Questions sharing a long head (run once for the whole extraction, its KV cache copied
    into each batch) give the same vector as every prompt run in full."""
    head = "Question: please read carefully. " * 3
    pairs = [ContrastPair(head + p.question, p.matching, p.not_matching) for p in PAIRS]
    model = AutoModelForCausalLM.from_pretrained(tiny_models[arch], dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_models[arch])
    shared = extract_vectors(model, tok, pairs, [0, 2], batch_size=3, share_prefix=True)
    per_batch = extract_vectors(model, tok, pairs, [0, 2], batch_size=3, share_head=False)
    full = extract_vectors(model, tok, pairs, [0, 2], batch_size=3, share_prefix=False)
    for layer in (0, 2):
        for other in (per_batch, full):  # head once per run, once per batch, no sharing
            diff = (shared.vectors[layer] - other.vectors[layer]).abs().max().item()
            assert diff < 1e-5, (layer, diff)
