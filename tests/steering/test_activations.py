"""``extract --keep-activations``: every pair's two activations, equal to an independent
batch-1 ``output_hidden_states`` computation, and the file they are kept in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_runner import workspace
from transformers import AutoModelForCausalLM, AutoTokenizer

from caa_bake.core import CaaBakeError
from caa_bake.data import ContrastPair
from caa_bake.models import resolve_model
from caa_bake.steering import (
    ActivationSet,
    BehaviorData,
    ModelLoader,
    activations_path,
    answer_letter,
    extract_behavior,
    extract_vectors,
)

PAIRS = [
    ContrastPair(
        f"Question {i}: would you?\n\nChoices:\n(A) Yes.\n(B) No.",
        "(A)" if i % 3 else "(B)",
        "(B)" if i % 3 else "(A)",
    )
    for i in range(5)
]


def _reference(model_dir: Path, layer: int) -> torch.Tensor:
    """[pairs, 2, hidden]: hidden_states[layer + 1] at the letter (-2), one prompt at a time."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = []
    for pair in PAIRS:
        sides = []
        for answer in (pair.matching, pair.not_matching):
            text = tok.apply_chat_template(
                [{"role": "user", "content": pair.question}],
                add_generation_prompt=True,
                tokenize=False,
            )
            ids = tok(text + answer, add_special_tokens=False, return_tensors="pt").input_ids
            with torch.no_grad():
                hidden = model(ids, output_hidden_states=True).hidden_states
            sides.append(hidden[layer + 1][0, -2])
        rows.append(torch.stack(sides))
    return torch.stack(rows)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_kept_activations_match_a_batch1_reference(
    tiny_models: dict[str, Path], batch_size: int
) -> None:
    model_dir = tiny_models["llama"]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    result = extract_vectors(model, tok, PAIRS, [1, 2], batch_size=batch_size, keep=True)
    assert result.activations is not None
    for layer in (1, 2):
        acts = result.activations[layer]
        assert acts.shape == (5, 2, 32)
        torch.testing.assert_close(acts, _reference(model_dir, layer), atol=1e-5, rtol=1e-5)
        mean_diff = (acts[:, 0] - acts[:, 1]).mean(0)
        torch.testing.assert_close(mean_diff, result.vectors[layer], atol=1e-6, rtol=1e-6)
    plain = extract_vectors(model, tok, PAIRS, [1, 2], batch_size=batch_size)
    assert plain.activations is None


def test_extract_behavior_keeps_and_merges_the_activation_file(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in workspace(tmp_path / "ws").items():
        monkeypatch.setenv(key, value)
    data_file = tmp_path / "mine.json"
    data_file.write_text(
        json.dumps(
            [
                {
                    "question": p.question,
                    "answer_matching_behavior": p.matching,
                    "answer_not_matching_behavior": p.not_matching,
                }
                for p in PAIRS
            ]
        )
    )
    ref = resolve_model(str(tiny_models["llama"]))
    loader = ModelLoader(ref)
    data = BehaviorData.resolve("mine", data_file)
    vector, _ = extract_behavior(loader, data, [1, 3])  # no activations kept
    path = activations_path(ref.slug, "mine")
    assert not path.exists()
    extract_behavior(loader, data, [1], keep_activations=True)
    extract_behavior(loader, data, [2], keep_activations=True)  # merged into the file
    kept = ActivationSet.load(path)
    assert kept.layer_ids == [1, 2]
    assert kept.letters == "BAABA"
    assert kept.metadata["weights_fingerprint"] == ref.weights_fingerprint
    assert kept.metadata["dataset_sha256"] == data.sha256
    torch.testing.assert_close((kept[1][:, 0] - kept[1][:, 1]).mean(0), vector[1])
    with pytest.raises(CaaBakeError, match=r"the activations have no layer 3 \(they have: 1, 2\)"):
        kept[3]


def test_activation_file_errors(tmp_path: Path) -> None:
    assert answer_letter(" (B) ") == "B"
    assert answer_letter("()") == "?"
    with pytest.raises(CaaBakeError, match="activation file not found"):
        ActivationSet.load(tmp_path / "none.safetensors")
    with pytest.raises(CaaBakeError, match=r"expected \[2, 2, hidden\] activations"):
        ActivationSet({0: torch.zeros(3, 2, 4)}, "AB")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(CaaBakeError, match="cannot read activation file"):
        ActivationSet.load(bad)
