"""DeepSpeed configs: the shipped ZeRO files, user files, the keys caa-bake owns; the spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caa_bake.core.errors import CaaBakeError
from caa_bake.finetune.config import resolve_ds_config, shipped_config_path
from caa_bake.finetune.spec import FinetuneSpec, LoraSettings, check_direction, check_optimizer


def test_shipped_configs_are_in_the_package() -> None:
    for stage, name in ((2, "zero2.json"), (3, "zero3.json")):
        path = shipped_config_path(stage)
        assert path.name == name
        assert (path.parent.name, path.parent.parent.name) == ("configs", "finetune")
        assert json.loads(path.read_text())["zero_optimization"]["stage"] == stage


def test_default_is_zero2_with_batch_keys_filled() -> None:
    config = resolve_ds_config(None, None, micro_batch=3, world_size=2)
    assert config.stage == 2
    assert config.source == "caa_bake/finetune/configs/zero2.json"
    assert config["train_micro_batch_size_per_gpu"] == 3
    assert config["gradient_accumulation_steps"] == 1
    assert config["train_batch_size"] == 6
    assert config["zero_allow_untested_optimizer"] is True


def test_zero3_and_stage_overrides() -> None:
    assert resolve_ds_config(None, 3, micro_batch=1, world_size=2).source.endswith("zero3.json")
    one = resolve_ds_config(None, 1, micro_batch=1, world_size=2)
    assert (one.stage, one.source) == (1, "caa_bake/finetune/configs/zero2.json")
    with pytest.raises(CaaBakeError, match=r"ZeRO stage 4 \(--zero-stage\) is not one of"):
        resolve_ds_config(None, 4, micro_batch=1, world_size=2)


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(data))
    return path


def test_user_config_keeps_its_stage_and_settings(tmp_path: Path) -> None:
    path = _write(tmp_path, {"zero_optimization": {"stage": 3, "overlap_comm": True}})
    config = resolve_ds_config(path, None, micro_batch=1, world_size=2)
    assert config.stage == 3
    assert config.source == str(path)
    assert config["zero_optimization"]["overlap_comm"] is True
    assert resolve_ds_config(path, 2, micro_batch=1, world_size=2).stage == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"optimizer": {"type": "Adam"}}, "has an 'optimizer' section"),
        ({"scheduler": {"type": "WarmupLR"}}, "has an 'scheduler' section"),
        ({"train_batch_size": 8}, "sets train_batch_size = 8 but caa-bake needs 2"),
        ({"gradient_accumulation_steps": 4}, "sets gradient_accumulation_steps = 4"),
        ({"zero_optimization": {"stage": 7}}, "ZeRO stage 7"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_user_configs(tmp_path: Path, data: object, message: str) -> None:
    with pytest.raises(CaaBakeError, match=message):
        resolve_ds_config(_write(tmp_path, data), None, micro_batch=1, world_size=2)


def test_unreadable_user_configs(tmp_path: Path) -> None:
    with pytest.raises(CaaBakeError, match="not found"):
        resolve_ds_config(tmp_path / "nope.json", None, micro_batch=1, world_size=1)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(CaaBakeError, match="is not valid JSON"):
        resolve_ds_config(broken, None, micro_batch=1, world_size=1)


def test_direction_and_optimizer_names() -> None:
    assert (check_direction("POS"), check_direction("neg")) == ("pos", "neg")
    assert (check_optimizer("SGD"), check_optimizer("adamw")) == ("sgd", "adamw")
    with pytest.raises(CaaBakeError, match="unknown direction 'up'; valid: pos"):
        check_direction("up")
    with pytest.raises(CaaBakeError, match="unknown optimizer 'adam'; valid: sgd, adamw"):
        check_optimizer("adam")


def test_spec_round_trips_through_json(tmp_path: Path) -> None:
    spec = FinetuneSpec(
        behavior="refusal",
        direction="neg",
        base={"path": "/m", "model_id": "m"},
        data={"sha256": "ab", "items": 4},
        prompt_style="chat-template",
        letters={"A": 1, "B": 2},
        epochs=2,
        learning_rate=1e-4,
        optimizer="adamw",
        batch_size=1,
        world_size=2,
        device="cpu",
        zero_stage=3,
        ds_config={"zero_optimization": {"stage": 3}},
        ds_config_source="caa_bake/finetune/configs/zero3.json",
        out="/out",
        lora=LoraSettings(r=4, alpha=8),
        max_steps=5,
    )
    spec.save(tmp_path / "job.json")
    assert FinetuneSpec.load(tmp_path / "job.json") == spec
    assert (spec.backend, spec.target) == ("gloo", "not_matching")
