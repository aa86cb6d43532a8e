"""The refusal vector on the real SmolLM2 equals a batch-1, full-forward reference loop.

Every sixth pair of the 408 (68 pairs, spread over the file): the whole file took 416 s of
CI time for the same check; batching, padding and the answer position are exercised as well
by this subset.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from caa_bake.data.datasets import load_pairs
from caa_bake.models.prompts import encode_prompt
from caa_bake.steering.extract import extract_vectors

LAYER = 13


@pytest.mark.slow
def test_refusal_layer13_matches_full_forward_reference(
    smollm2_dir: Path, pulled_datasets: Path
) -> None:
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    pairs = load_pairs("refusal", "generate")
    assert len(pairs) == 408
    pairs = pairs[::6]

    diffs = []
    for pair in pairs:
        acts = []
        for answer in (pair.matching, pair.not_matching):
            enc = encode_prompt(tok, pair.question, answer)
            letter = tok.decode([enc.input_ids[enc.answer_index]])
            assert answer[1] in letter, (letter, answer)
            with torch.no_grad():
                out = model(torch.tensor([enc.input_ids]), output_hidden_states=True)
            acts.append(out.hidden_states[LAYER + 1][0, enc.answer_index])
        diffs.append(acts[0] - acts[1])
    reference = torch.stack(diffs).mean(0)

    ours = extract_vectors(model, tok, pairs, [LAYER], batch_size=16).vectors[LAYER]
    cos = torch.nn.functional.cosine_similarity(reference, ours, dim=0).item()
    print(f"cosine={cos:.8f} max|diff|={(reference - ours).abs().max().item():.3g}")
    assert cos >= 0.9999
