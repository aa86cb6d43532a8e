"""``caa_bake.finetune.plan``: names, CPU count, and the checks the planner adds on top of
the spec's (LoRA numbers, external launchers, context length, output folder).

The CLI-level planner errors live in tests/cli/test_finetune_cmd.py; no rank is started here.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from tiny_models import build_model

from caa_bake.core.errors import CaaBakeError
from caa_bake.finetune.plan import (
    FinetuneRequest,
    _context_length,
    cpu_count,
    finetune_name,
    plan_finetune,
)
from caa_bake.finetune.spec import LoraSettings
from caa_bake.models.loading import resolve_model


@pytest.fixture(scope="module")
def model512(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plan")
    return build_model("llama", root / "tiny-plan", max_position_embeddings=512)


def _request(**changes: Any) -> FinetuneRequest:
    return replace(FinetuneRequest("refusal", "pos"), **changes)


def _error(tmp_path: Path, **changes: Any) -> str:
    request = _request(out=tmp_path / "out", **changes)
    with pytest.raises(CaaBakeError) as info:
        plan_finetune(request)
    assert not (tmp_path / "out").exists()
    return str(info.value)


def test_finetune_name() -> None:
    assert finetune_name("tiny", "refusal", "pos") == "tiny-ft-refusal-pos"
    assert (
        finetune_name("m", "sycophancy", "neg", ["lora", "3ep"]) == "m-ft-sycophancy-neg-lora-3ep"
    )


def test_cpu_count_is_the_affinity_mask() -> None:
    assert cpu_count() == len(os.sched_getaffinity(0)) >= 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lora": True, "lora_r": 0}, "--lora-r must be at least 1, got 0"),
        ({"lora": True, "lora_alpha": -2}, "--lora-alpha must be at least 1, got -2"),
        ({"lora": True, "lora_dropout": 1.0}, "--lora-dropout must be in [0, 1), got 1.0"),
        ({"lora": True, "lora_dropout": -0.1}, "--lora-dropout must be in [0, 1), got -0.1"),
        ({"learning_rate": 0.0}, "--lr must be a positive number, got 0.0"),
        ({"learning_rate": math.nan}, "--lr must be a positive number, got nan"),
        ({"learning_rate": math.inf}, "--lr must be a positive number, got inf"),
        ({"gpus": 0}, "--gpus must be at least 1, got 0"),
        ({"direction": "up", "behavior": "nonsense"}, "unknown direction 'up'"),  # first check
        ({"behavior": "nonsense", "epochs": 0}, "unknown behavior 'nonsense'"),
    ],
)
def test_bad_numbers(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    assert _error(tmp_path, **changes).startswith(message)


def test_lora_numbers_are_not_checked_without_lora(
    pulled_datasets: Path, model512: Path, tmp_path: Path
) -> None:
    plan = plan_finetune(_request(model=str(model512), lora_r=0, out=tmp_path / "o"))
    assert plan.spec.lora is None


def test_external_launcher_world_size_must_match(tmp_path: Path) -> None:
    with pytest.raises(CaaBakeError, match=r"^the launcher started 2 ranks but 3 were asked for$"):
        plan_finetune(_request(cpu_ranks=3, out=tmp_path / "o"), external_world=2)
    assert not (tmp_path / "o").exists()


def test_missing_datasets_say_how_to_pull(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAA_BAKE_DATASETS_DIR", str(tmp_path / "no-datasets"))
    assert "caa-bake datasets pull" in _error(tmp_path)


def test_context_length_from_the_config(tmp_path: Path) -> None:
    def write(data: dict[str, Any]) -> Path:
        path = tmp_path / "config.json"
        path.write_text(json.dumps(data))
        return path

    assert _context_length(write({"max_position_embeddings": 2048})) == 2048
    assert _context_length(write({"n_positions": 1024})) == 1024  # gpt2
    assert _context_length(write({"text_config": {"max_position_embeddings": 8192}})) == 8192
    assert _context_length(write({"max_position_embeddings": True})) is None
    assert _context_length(write({"max_position_embeddings": 0})) is None
    assert _context_length(write({"model_type": "x"})) is None


def test_gpt2_context_is_n_positions(pulled_datasets: Path, tmp_path: Path) -> None:
    short = build_model("gpt2", tmp_path / "gpt2-short", n_positions=48)
    message = _error(tmp_path, model=str(short))
    assert message.startswith("refusal item ")
    assert message.endswith("more than the model's context of 48 tokens")


def test_lora_adamw_plan_in_the_exports_folder(
    pulled_datasets: Path, model512: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports = tmp_path / "exports"
    monkeypatch.setenv("CAA_BAKE_EXPORTS_DIR", str(exports))
    plan = plan_finetune(
        _request(
            direction="POS",
            model=str(model512),
            cpu_ranks=2,
            batch_size=3,
            lora=True,
            lora_r=4,
            lora_alpha=8,
            lora_dropout=0.05,
            optimizer="AdamW",
            learning_rate=3e-5,
            epochs=2,
            seed=9,
        )
    )
    spec = plan.spec
    slug = resolve_model(str(model512)).slug
    assert plan.target == exports / f"{slug}-ft-refusal-pos-lora-adamw-lr3e-05-2ep"
    assert spec.out == str(plan.target)
    assert not plan.target.exists()
    assert (spec.direction, spec.optimizer, spec.epochs, spec.seed) == ("pos", "adamw", 2, 9)
    assert spec.lora == LoraSettings(r=4, alpha=8, dropout=0.05)
    assert spec.ds_config["train_batch_size"] == 6
    assert spec.threads_per_rank == max(1, cpu_count() // 2)
    assert spec.launcher == "caa-bake"
    assert spec.base["path"] == str(model512)
    assert spec.base["model_type"] == "llama"
    assert spec.base["architectures"] == ["LlamaForCausalLM"]
    items = spec.data["items"]
    assert items == len(plan.examples) == 408
    assert spec.data["items_per_epoch"] == items - items % 6
    assert set(spec.letters) == {"A", "B"}
    # every example ends where the answer letter is predicted, with the letter as target
    assert all(e.target_id in spec.letters.values() for e in plan.examples)
    assert [e.index for e in plan.examples] == list(range(items))


def test_external_launch_plan(pulled_datasets: Path, model512: Path, tmp_path: Path) -> None:
    plan = plan_finetune(_request(model=str(model512), out=tmp_path / "o"), external_world=2)
    assert (plan.spec.world_size, plan.spec.launcher, plan.spec.device) == (2, "external", "cpu")


def test_existing_output(pulled_datasets: Path, model512: Path, tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CaaBakeError, match="already exists; pass --force"):
        plan_finetune(_request(model=str(model512), out=out))
    plan = plan_finetune(_request(model=str(model512), out=out, force=True))
    assert plan.target == out
    assert (out / "keep.txt").read_text() == "mine"  # planning writes nothing
    with pytest.raises(CaaBakeError, match="overlaps the source folder"):
        plan_finetune(_request(model=str(model512), out=model512 / "ft", force=True))


def test_a_registered_custom_behavior_is_trained_by_name(
    model512: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from caa_bake.core.hashing import file_sha256
    from caa_bake.data.custom import prepare_custom

    monkeypatch.setenv("CAA_BAKE_DATASETS_DIR", str(tmp_path / "datasets"))
    items = [
        {
            "question": f"Q{i}: keep it?\n\nChoices:\n(A) Yes.\n(B) No.",
            "answer_matching_behavior": "(A)" if i % 2 else "(B)",
            "answer_not_matching_behavior": "(B)" if i % 2 else "(A)",
        }
        for i in range(5)
    ]
    source = tmp_path / "keep.json"
    source.write_text(json.dumps(items))
    folder = prepare_custom("keep", source).register()
    plan = plan_finetune(_request(behavior="keep", model=str(model512), out=tmp_path / "o"))
    assert plan.spec.behavior == "keep"
    assert plan.spec.data["sha256"] == file_sha256(folder / "generate.json") == file_sha256(source)
    assert len(plan.examples) == 5
