"""The variants an eval plans, in order, and the finetuned folders it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import build_model

from caa_bake.core.errors import CaaBakeError
from caa_bake.evaluation.variants import (
    EvalJob,
    Variant,
    find_finetuned,
    plan_variants,
    vector_of,
)
from caa_bake.models.loading import resolve_model
from caa_bake.steering.vector import SteeringVector


def test_plan_order_and_tasks() -> None:
    job = EvalJob(behaviors=["refusal", "sycophancy"], layer=2, multipliers=[-1.0, 0.0, 1.0])
    plan = plan_variants(job, [])
    base = plan[0]
    assert (base.state, base.kind, base.multiplier) == ("none", "base", 0.0)
    assert base.tasks[:2] == ("caa_ab_refusal", "caa_mmlu")
    assert [v.label for v in plan[1:5]] == [
        "baked refusal L2 m-1",
        "hooks refusal L2 m-1",
        "baked refusal L2 m1",
        "hooks refusal L2 m1",
    ]
    assert len(plan) == 1 + 2 * 2 * 2  # multiplier 0 is the unsteered model, not a variant
    only_baked = plan_variants(EvalJob(["refusal"], 2, [1.0], tasks="ab", kinds=("baked",)), [])
    assert [(v.kind, v.tasks) for v in only_baked] == [
        ("base", ("caa_ab_refusal",)),
        ("baked", ("caa_ab_refusal",)),
    ]


def test_vector_of_unsteered_variants_is_none() -> None:
    vec = SteeringVector({2: torch.ones(4)})
    base = Variant("none", "base", "", None, 0.0, ())
    baked = Variant("none", "baked", "refusal", 2, 1.0, ())
    assert vector_of(base, {"refusal": vec}) is None
    assert vector_of(baked, {"refusal": vec}) is vec


def test_explicit_finetuned_folders_are_checked(tmp_path: Path) -> None:
    ref = resolve_model(str(build_model("llama", tmp_path / "base")))
    with pytest.raises(CaaBakeError, match="does not exist"):
        find_finetuned(ref, ["refusal"], (tmp_path / "missing",), discover=False)
    plain = build_model("llama", tmp_path / "plain", seed=1)
    with pytest.raises(CaaBakeError, match="is not a caa-bake finetune output"):
        find_finetuned(ref, ["refusal"], (plain,), discover=False)
    assert find_finetuned(ref, ["refusal"], (), discover=False) == []
