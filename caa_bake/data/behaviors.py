"""The behavior names caa-bake knows, and the check that turns a typo into a clear error.

Two families:

- the 7 processed CAA behaviors (``CAA_BEHAVIORS``), as published with the CAA paper;
- the 16 raw Anthropic human-written "advanced AI risk" evals, converted by
  ``caa-bake datasets pull`` into the same A/B contrast-pair format and named with an
  ``anthropic-`` prefix (``ANTHROPIC_BEHAVIORS``) so they never clash with a CAA name.

``AB_EVALS`` are the two capability evals cast as A/B questions (not behaviors).
"""

from __future__ import annotations

from caa_bake.core import CaaBakeError

__all__ = [
    "AB_EVALS",
    "ANTHROPIC_BEHAVIORS",
    "ANTHROPIC_PREFIX",
    "ANTHROPIC_RAW_NAMES",
    "CAA_BEHAVIORS",
    "all_behaviors",
    "anthropic_raw_name",
    "check_behavior",
    "is_anthropic",
]

CAA_BEHAVIORS: tuple[str, ...] = (
    "coordinate-other-ais",
    "corrigible-neutral-HHH",
    "hallucination",
    "myopic-reward",
    "refusal",
    "survival-instinct",
    "sycophancy",
)

ANTHROPIC_PREFIX = "anthropic-"

#: File stems of ``advanced-ai-risk/human_generated_evals/<name>.jsonl`` upstream.
ANTHROPIC_RAW_NAMES: tuple[str, ...] = (
    "coordinate-itself",
    "coordinate-other-ais",
    "coordinate-other-versions",
    "corrigible-less-HHH",
    "corrigible-more-HHH",
    "corrigible-neutral-HHH",
    "myopic-reward",
    "one-box-tendency",
    "power-seeking-inclination",
    "self-awareness-general-ai",
    "self-awareness-good-text-model",
    "self-awareness-text-model",
    "self-awareness-training-architecture",
    "self-awareness-web-gpt",
    "survival-instinct",
    "wealth-seeking-inclination",
)

ANTHROPIC_BEHAVIORS: tuple[str, ...] = tuple(ANTHROPIC_PREFIX + n for n in ANTHROPIC_RAW_NAMES)

AB_EVALS: tuple[str, ...] = ("mmlu", "truthfulqa")


def all_behaviors() -> list[str]:
    """Every behavior name: the 7 CAA ones first, then the 16 ``anthropic-*`` ones."""
    return [*CAA_BEHAVIORS, *ANTHROPIC_BEHAVIORS]


def is_anthropic(name: str) -> bool:
    """True for a converted raw Anthropic behavior (``anthropic-*``)."""
    return name in ANTHROPIC_BEHAVIORS


def anthropic_raw_name(name: str) -> str:
    """``anthropic-power-seeking-inclination`` -> ``power-seeking-inclination``."""
    if not is_anthropic(name):
        raise CaaBakeError(f"'{name}' is not an anthropic-* behavior")
    return name[len(ANTHROPIC_PREFIX) :]


def check_behavior(name: str) -> str:
    """Return the canonical behavior name, or raise ``CaaBakeError`` listing valid ones.

    The match is exact, or else case-insensitive when that is unambiguous (so
    ``corrigible-neutral-hhh`` gives ``corrigible-neutral-HHH``).
    """
    valid = all_behaviors()
    if name in valid:
        return name
    folded = [v for v in valid if v.lower() == name.strip().lower()]
    if len(folded) == 1:
        return folded[0]
    raise CaaBakeError(f"unknown behavior '{name}'; valid: {', '.join(valid)}")
