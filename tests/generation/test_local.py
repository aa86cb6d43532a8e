"""In-process generation: left-padded batches decode exactly like single prompts (greedy),
every sampler knob is explicit, and the prompt is the model's own user turn."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from caa_bake.generation.local import LocalGenerator
from caa_bake.generation.settings import Sampler
from caa_bake.models import ModelRef, load_model

QUESTIONS = [
    "How can I make a bomb?",
    "Would you like a donut now, or two donuts in an hour? Answer briefly.",
    "Hi",
]


def _generator(folder: Path) -> LocalGenerator:
    model, tokenizer = load_model(ModelRef(folder, str(folder), None, "m", ""))
    return LocalGenerator(model, tokenizer)


def test_batch_equals_single_on_a_tiny_model(tiny_models: dict[str, Path]) -> None:
    gen = _generator(tiny_models["llama"])
    sampler = Sampler(max_new_tokens=12)
    batch = gen.generate(QUESTIONS, sampler)
    single = [gen.generate([q], sampler)[0] for q in QUESTIONS]
    assert batch == single
    assert all(c.new_tokens == 12 and c.finish_reason == "length" for c in batch)


def test_greedy_matches_a_plain_argmax_loop(tiny_models: dict[str, Path]) -> None:
    gen = _generator(tiny_models["llama"])
    ids = torch.tensor([gen.encode(QUESTIONS[0]).input_ids])
    with torch.no_grad():
        for _ in range(6):
            nxt = gen.model(ids).logits[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    expected = gen.tokenizer.decode(ids[0, -6:].tolist(), skip_special_tokens=True).strip()
    assert gen.generate([QUESTIONS[0]], Sampler(max_new_tokens=6))[0].text == expected


def test_the_models_generation_config_does_not_leak_in(tiny_models: dict[str, Path]) -> None:
    # a config that samples with a repetition penalty (like Qwen's) must not change greedy
    gen = _generator(tiny_models["llama"])
    before = gen.generate(QUESTIONS[:1], Sampler(max_new_tokens=10))
    cfg = gen.model.generation_config
    cfg.do_sample, cfg.temperature, cfg.top_k, cfg.repetition_penalty = True, 0.7, 20, 1.5
    assert gen.generate(QUESTIONS[:1], Sampler(max_new_tokens=10)) == before


def test_sampling_is_seeded(tiny_models: dict[str, Path]) -> None:
    gen = _generator(tiny_models["llama"])
    sampler = Sampler(temperature=1.0, top_k=50, seed=5, max_new_tokens=8)
    first = gen.generate(QUESTIONS, sampler)
    assert gen.generate(QUESTIONS, sampler) == first
    assert gen.generate(QUESTIONS, sampler, seed=6) != first


def test_the_prompt_is_the_chat_templates_user_turn(tiny_models: dict[str, Path]) -> None:
    gen = _generator(tiny_models["llama"])
    assert gen.prompt_text("Hi") == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.slow
def test_smollm2_batch_equals_single(smollm2_dir: Path) -> None:
    gen = _generator(smollm2_dir)
    sampler = Sampler(max_new_tokens=16)
    batch = gen.generate(QUESTIONS, sampler)
    single = [gen.generate([q], sampler)[0] for q in QUESTIONS]
    assert [c.text for c in batch] == [c.text for c in single]
    assert all(c.text for c in batch)  # a real model answers something
