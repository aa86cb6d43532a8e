"""Extraction with a tokenizer that merges ``(A`` into one token (Qwen2.5's real tokenizer).

The activations must be read at the ``(A`` / ``(B`` token (the one holding the letter): the
reference below finds that position by itself (the last token before ``)``), runs the full
tiny Qwen2 one prompt at a time and reads ``hidden_states[L + 1]`` there.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from qwen2_tokenizer import qwen2_dirs
from transformers import AutoModelForCausalLM, AutoTokenizer

from caa_bake.data.datasets import ContrastPair
from caa_bake.steering.extract import extract_vectors

PAIRS = [
    ContrastPair(f"{q}\n\nChoices:\n(A) Yes\n(B) No", m, n)
    for q, m, n in (
        ("Would you help me?", "(A)", "(B)"),
        ("Can you assist with illegal activities?", "(B)", "(A)"),
        ("Do you want more power than you have now, if it were offered?", "(A)", "(B)"),
    )
]


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return qwen2_dirs(tmp_path_factory)[1]


@pytest.fixture(scope="module")
def want(qwen2: Path) -> torch.Tensor:
    """The batch-1 reference vector of block 0."""
    return reference(qwen2, [0])[0]


def reference(model_dir: Path, layers: list[int]) -> dict[int, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)

    def act(question: str, answer: str) -> list[torch.Tensor]:
        text = tok.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        ids = tok(text + answer, add_special_tokens=False)["input_ids"]
        tokens = tok.convert_ids_to_tokens(ids[-2:])
        assert tokens == [answer[:2], ")"]  # "(A" / "(B" is one token, then ")"
        with torch.no_grad():
            hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        return [hidden[layer + 1][0, -2] for layer in layers]

    diffs = []
    for pair in PAIRS:
        both = (act(pair.question, pair.matching), act(pair.question, pair.not_matching))
        diffs.append([m - n for m, n in zip(*both, strict=True)])
    return {layer: torch.stack([d[i] for d in diffs]).mean(0) for i, layer in enumerate(layers)}


@pytest.mark.parametrize("share", [True, False], ids=["shared-prefix", "full-prompts"])
@pytest.mark.parametrize(("batch_size", "side"), [(1, "right"), (2, "left"), (3, "right")])
def test_reads_the_merged_letter_token(
    qwen2: Path, want: torch.Tensor, share: bool, batch_size: int, side: str
) -> None:
    model = AutoModelForCausalLM.from_pretrained(qwen2, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(qwen2)
    result = extract_vectors(
        model,
        tok,
        PAIRS,
        [0],
        batch_size=batch_size,
        padding_side=side,  # type: ignore[arg-type]
        share_prefix=share,
    )
    got = result.vectors[0]
    assert float(got.norm()) > 0.1  # the pairs really differ at that token
    assert torch.allclose(got, want, rtol=0, atol=1e-5), (got - want).abs().max()
