"""Behavior names and the unknown-behavior error."""

from __future__ import annotations

import pytest

from caa_bake.core.errors import CaaBakeError
from caa_bake.data.behaviors import (
    AB_EVALS,
    ANTHROPIC_BEHAVIORS,
    ANTHROPIC_RAW_NAMES,
    CAA_BEHAVIORS,
    all_behaviors,
    anthropic_raw_name,
    check_behavior,
    is_anthropic,
)
from caa_bake.data.manifest import load_manifest


def test_caa_behaviors_in_paper_order() -> None:
    assert CAA_BEHAVIORS == (
        "coordinate-other-ais",
        "corrigible-neutral-HHH",
        "hallucination",
        "myopic-reward",
        "refusal",
        "survival-instinct",
        "sycophancy",
    )


def test_anthropic_behaviors_are_prefixed_raw_names() -> None:
    assert len(ANTHROPIC_BEHAVIORS) == 16
    assert ANTHROPIC_BEHAVIORS[8] == "anthropic-power-seeking-inclination"
    assert [f"anthropic-{n}" for n in ANTHROPIC_RAW_NAMES] == list(ANTHROPIC_BEHAVIORS)
    assert not set(ANTHROPIC_BEHAVIORS) & set(CAA_BEHAVIORS)


def test_anthropic_names_match_the_manifest() -> None:
    prefix = "anthropic-model-written-evals/advanced-ai-risk/human_generated_evals/"
    stems = sorted(
        e.path[len(prefix) : -len(".jsonl")] for e in load_manifest() if e.path.startswith(prefix)
    )
    assert stems == sorted(ANTHROPIC_RAW_NAMES)


def test_all_behaviors() -> None:
    names = all_behaviors()
    assert names == [*CAA_BEHAVIORS, *ANTHROPIC_BEHAVIORS]
    assert len(names) == len(set(names)) == 23
    assert AB_EVALS == ("mmlu", "truthfulqa")
    assert not set(AB_EVALS) & set(names)


def test_check_behavior_exact_and_case_insensitive() -> None:
    assert check_behavior("refusal") == "refusal"
    assert check_behavior("corrigible-neutral-hhh") == "corrigible-neutral-HHH"
    assert check_behavior("Anthropic-Corrigible-Less-HHH") == "anthropic-corrigible-less-HHH"


def test_check_behavior_unknown_lists_valid_ones() -> None:
    with pytest.raises(CaaBakeError) as info:
        check_behavior("power-seeking")
    message = str(info.value)
    assert message == (
        "unknown behavior 'power-seeking'; valid: "
        + ", ".join(all_behaviors())
        + "; for your own contrast pairs add --dataset FILE (registers it as 'power-seeking')"
    )
    assert "\n" not in message


def test_anthropic_helpers() -> None:
    assert is_anthropic("anthropic-one-box-tendency")
    assert not is_anthropic("myopic-reward")
    assert anthropic_raw_name("anthropic-one-box-tendency") == "one-box-tendency"
    with pytest.raises(CaaBakeError, match="not an anthropic-\\* behavior"):
        anthropic_raw_name("myopic-reward")
