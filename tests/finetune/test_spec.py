"""``caa_bake.finetune.spec``: option checks, variant name parts, the JSON job file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from caa_bake.core.errors import CaaBakeError
from caa_bake.finetune.spec import (
    DIRECTIONS,
    OPTIMIZERS,
    FinetuneSpec,
    LoraSettings,
    check_direction,
    check_optimizer,
    variant_parts,
)


def _spec(**changes: Any) -> FinetuneSpec:
    fields: dict[str, Any] = {
        "behavior": "sycophancy",
        "direction": "pos",
        "base": {"path": "/models/tiny", "model_id": "owner/tiny", "revision": None},
        "data": {"file": "generate_dataset.json", "sha256": "ab" * 32, "items": 10},
        "prompt_style": "chat-template",
        "letters": {"A": 7, "B": 8},
        "epochs": 1,
        "learning_rate": 1e-4,
        "optimizer": "sgd",
        "batch_size": 2,
        "world_size": 2,
        "device": "cpu",
        "zero_stage": 2,
        "ds_config": {"zero_optimization": {"stage": 2}, "train_batch_size": 4},
        "ds_config_source": "caa_bake/finetune/configs/zero2.json",
        "out": "/exports/tiny-ft-sycophancy-pos",
    }
    return FinetuneSpec(**{**fields, **changes})


def test_names_of_directions_and_optimizers() -> None:
    assert DIRECTIONS == ("pos", "neg")
    assert OPTIMIZERS == ("sgd", "adamw")


@pytest.mark.parametrize(("text", "want"), [("pos", "pos"), (" NEG ", "neg"), ("Pos\n", "pos")])
def test_direction_is_normalized(text: str, want: str) -> None:
    assert check_direction(text) == want


@pytest.mark.parametrize("text", ["", "positive", "+", "neg pos"])
def test_unknown_direction_lists_both(text: str) -> None:
    with pytest.raises(CaaBakeError, match=r"unknown direction .*valid: pos .*neg"):
        check_direction(text)


@pytest.mark.parametrize(("text", "want"), [(" AdamW", "adamw"), ("SGD ", "sgd")])
def test_optimizer_is_normalized(text: str, want: str) -> None:
    assert check_optimizer(text) == want


def test_unknown_optimizer() -> None:
    with pytest.raises(CaaBakeError, match=r"^unknown optimizer 'lion'; valid: sgd, adamw$"):
        check_optimizer("lion")


@pytest.mark.parametrize(
    ("options", "parts"),
    [
        ({"lora": False}, []),
        ({"lora": True}, ["lora"]),
        ({"lora": False, "optimizer": "adamw"}, ["adamw", "lr0.0001"]),
        ({"lora": False, "learning_rate": 1e-5}, ["sgd", "lr1e-05"]),
        (
            {"lora": True, "optimizer": "adamw", "learning_rate": 3e-4},
            ["lora", "adamw", "lr0.0003"],
        ),
        ({"lora": False, "epochs": 3}, ["3ep"]),
        ({"lora": False, "max_steps": 100}, ["100steps"]),
        ({"lora": False, "max_steps": None}, []),
        (
            {
                "lora": True,
                "optimizer": "adamw",
                "learning_rate": 1e-5,
                "epochs": 2,
                "max_steps": 5,
            },
            ["lora", "adamw", "lr1e-05", "2ep", "5steps"],
        ),
    ],
)
def test_variant_parts_name_what_differs_from_the_paper(
    options: dict[str, Any], parts: list[str]
) -> None:
    assert variant_parts(**options) == parts


def test_lora_defaults() -> None:
    assert LoraSettings() == LoraSettings(r=16, alpha=32, dropout=0.0, target_modules="all-linear")


def test_backend_and_target_follow_device_and_direction() -> None:
    assert (_spec().backend, _spec().target) == ("gloo", "matching")
    assert _spec(device="cuda").backend == "nccl"
    assert _spec(direction="neg").target == "not_matching"


def test_job_file_is_sorted_json_and_round_trips(tmp_path: Path) -> None:
    spec = _spec(lora=None, seed=7, threads_per_rank=4, launcher="external")
    text = spec.to_json()
    raw = json.loads(text)
    assert list(raw) == sorted(raw)
    assert raw["lora"] is None and raw["max_steps"] is None
    assert raw["ds_config"] == {"zero_optimization": {"stage": 2}, "train_batch_size": 4}
    path = tmp_path / "job.json"
    spec.save(path)
    assert path.read_text(encoding="utf-8") == text + "\n"
    loaded = FinetuneSpec.load(path)
    assert loaded == spec
    assert loaded.lora is None


def test_lora_settings_come_back_as_lora_settings(tmp_path: Path) -> None:
    spec = _spec(lora=LoraSettings(r=4, alpha=8, dropout=0.1))
    loaded = FinetuneSpec.from_json(spec.to_json())
    assert isinstance(loaded.lora, LoraSettings)
    assert loaded.lora == LoraSettings(4, 8, 0.1)
    assert loaded == spec


def test_spec_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _spec().epochs = 3  # type: ignore[misc]
