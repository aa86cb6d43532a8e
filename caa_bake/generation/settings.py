"""Sampler settings of ``caa-bake generate`` and the multipliers it runs.

The paper's open-ended evaluation decodes greedily for 100 new tokens; that is the default.
Sampling is the user's choice: temperature, top-p, top-k, a seed and several samples per
question. Both backends (transformers in process, an OpenAI-compatible endpoint) take the same
settings, and every output row records them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from caa_bake.core import CaaBakeError, parse_multipliers

__all__ = ["Sampler", "fmt_mult", "parse_mults", "settings_digest"]


@dataclass(frozen=True)
class Sampler:
    """How to decode: ``temperature`` 0 is greedy (top-p / top-k / seed then do not matter)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    seed: int = 0
    max_new_tokens: int = 100
    samples: int = 1  # answers per question

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise CaaBakeError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise CaaBakeError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise CaaBakeError(f"--top-k must be >= 0 (0: off), got {self.top_k}")
        if self.max_new_tokens < 1:
            raise CaaBakeError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if self.samples < 1:
            raise CaaBakeError(f"--samples must be >= 1, got {self.samples}")
        if self.greedy and self.samples > 1:
            raise CaaBakeError(
                "greedy decoding gives one answer per question: --samples > 1 needs "
                "--temperature > 0"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def record(self) -> dict[str, Any]:
        """The settings as written into every row (greedy ones without the unused knobs)."""
        out = asdict(self)
        out["greedy"] = self.greedy
        if self.greedy:
            for key in ("top_p", "top_k", "seed"):
                out.pop(key)
        return out

    def describe(self) -> str:
        if self.greedy:
            return f"greedy, {self.max_new_tokens} new tokens"
        top = f", top-p {self.top_p}" + (f", top-k {self.top_k}" if self.top_k else "")
        return (
            f"temperature {self.temperature}{top}, seed {self.seed}, "
            f"{self.samples} sample(s), {self.max_new_tokens} new tokens"
        )


def settings_digest(record: dict[str, Any]) -> str:
    """A short stable hash of a settings record (names a default run folder)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def parse_mults(text: str) -> list[float]:
    """``"-1,0,1"`` -> ``[-1.0, 0.0, 1.0]`` (finite, no duplicates, order kept)."""
    return parse_multipliers(text, keep_order=True)


def fmt_mult(value: float) -> str:
    """-1.0 -> "-1", 0.5 -> "0.5", 1.0 -> "+1" (as the paper's tables write them)."""
    text = f"{value:g}"
    return f"+{text}" if value > 0 else text
