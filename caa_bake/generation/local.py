"""The in-process backend: batched generation with transformers.

The question is the user turn of the model's own prompt format (the chat template, the
Llama-2 ``[INST]`` format, or ``Question: ... Answer:`` for base models: the same layouts
extraction uses, with nothing prefilled). Prompts are left-padded into batches; positions come
from the attention mask, so a padded prompt decodes as it would alone (greedy: tested equal).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from caa_bake.core import CaaBakeError
from caa_bake.generation.settings import Sampler
from caa_bake.models import EncodedPrompt, detect_style, encode_prompt, pad_batch

__all__ = ["Completion", "LocalGenerator"]


@dataclass(frozen=True)
class Completion:
    text: str
    new_tokens: int
    finish_reason: str  # "stop" (an end token) or "length"


@contextlib.contextmanager
def _quiet_flags() -> Iterator[None]:
    """Hide transformers' note that sampling knobs are unused in greedy decoding."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


class LocalGenerator:
    """Generate answers from a loaded model and tokenizer."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.style = detect_style(tokenizer, getattr(model, "config", None))
        eos = getattr(model.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
        self.stop_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        if not self.stop_ids:
            raise CaaBakeError("the tokenizer has no end-of-sequence token to stop generation at")
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else min(self.stop_ids))

    def encode(self, question: str) -> EncodedPrompt:
        return encode_prompt(self.tokenizer, question, "", style=self.style)

    def prompt_text(self, question: str) -> str:
        """The prompt as the model sees it (special tokens written out)."""
        return str(self.tokenizer.decode(self.encode(question).input_ids))

    @torch.no_grad()
    def generate(
        self, questions: Sequence[str], sampler: Sampler, *, seed: int | None = None
    ) -> list[Completion]:
        """One answer per question, generated as one left-padded batch."""
        if not questions:
            return []
        prompts = [self.encode(q) for q in questions]
        input_ids, mask, _positions, _ = pad_batch(prompts, self.pad_id, "left")
        device = next(self.model.parameters()).device
        # every knob explicit: transformers fills unset ones from the model's generation
        # config (Qwen's sets temperature 0.7, top-k 20, top-p 0.8, repetition penalty 1.1)
        options: dict[str, Any] = {
            "max_new_tokens": sampler.max_new_tokens,
            "do_sample": not sampler.greedy,
            "temperature": sampler.temperature if not sampler.greedy else 1.0,
            "top_p": sampler.top_p,
            "top_k": sampler.top_k,
            "min_p": None,
            "typical_p": 1.0,
            "repetition_penalty": 1.0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
        }
        if not sampler.greedy:
            torch.manual_seed(sampler.seed if seed is None else seed)
        with _quiet_flags():
            out = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                pad_token_id=self.pad_id,
                eos_token_id=sorted(self.stop_ids),
                **options,
            )
        width = input_ids.shape[1]
        results = []
        for row in out[:, width:].tolist():
            kept: list[int] = []
            reason = "length"
            for token in row:
                if token in self.stop_ids:
                    reason = "stop"
                    break
                kept.append(token)
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            results.append(
                Completion(text=text.strip(), new_tokens=len(kept), finish_reason=reason)
            )
        return results
