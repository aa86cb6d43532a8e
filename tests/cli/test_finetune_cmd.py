"""Bad input to ``caa-bake finetune``: one ``error:`` line, exit 1, nothing written.

The first group goes through the real entry point; the rest call the planner directly
(everything is validated there before any rank starts).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from tiny_models import build_model

from caa_bake.core.errors import CaaBakeError
from caa_bake.finetune.plan import FinetuneRequest, finetune_name, plan_finetune


@pytest.fixture(scope="module")
def llama512(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model("llama", tmp_path_factory.mktemp("m") / "llama", max_position_embeddings=512)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--behavior", "refusl", "--direction", "pos"],
            "error: unknown behavior 'refusl'; valid: coordinate-other-ais,",
        ),
        (
            ["--behavior", "refusal", "--direction", "up"],
            "error: unknown direction 'up'; valid: pos (train towards the behavior-matching "
            "answer), neg (towards the non-matching answer)",
        ),
        (
            ["--behavior", "refusal", "--direction", "pos", "--cpu-ranks", "0"],
            "error: --cpu-ranks must be at least 1, got 0",
        ),
        (
            ["--behavior", "refusal", "--direction", "pos", "--gpus", "2"],
            "error: --gpus 2: this machine has no GPU visible to torch; train on CPU with "
            "--cpu-ranks 2 instead",
        ),
    ],
    ids=["behavior", "direction", "cpu-ranks-0", "gpus-without-gpu"],
)
def test_bad_options_give_one_error_line(args: list[str], message: str, tmp_path: Path) -> None:
    if "--gpus" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    exports = tmp_path / "exports"
    proc = run_cli("finetune", *args, env={"CAA_BAKE_EXPORTS_DIR": str(exports)})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(message)
    assert not exports.exists()


def test_existing_output_is_refused_and_untouched(
    pulled_datasets: Path, llama512: Path, tmp_path: Path
) -> None:
    exports = tmp_path / "exports"
    target = exports / finetune_name("llama", "refusal", "pos")
    target.mkdir(parents=True)
    (target / "keep.txt").write_text("mine")
    proc = run_cli(
        "finetune",
        "--behavior",
        "refusal",
        "--direction",
        "pos",
        "--model",
        str(llama512),
        env={"CAA_BAKE_EXPORTS_DIR": str(exports)},
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {target} already exists; pass --force to replace it"
    ]
    assert _listing(exports) == [target.name]
    assert _listing(target) == ["keep.txt"]


def _plan_error(tmp_path: Path, **options: object) -> str:
    request = FinetuneRequest(
        **{"behavior": "refusal", "direction": "pos", "out": tmp_path / "out", **options}  # type: ignore[arg-type]
    )
    with pytest.raises(CaaBakeError) as info:
        plan_finetune(request)
    assert not (tmp_path / "out").exists()
    return str(info.value)


def test_planner_rejects_bad_numbers_and_combinations(tmp_path: Path) -> None:
    both = _plan_error(tmp_path, gpus=1, cpu_ranks=2)
    assert both == "give either --cpu-ranks or --gpus, not both"
    assert _plan_error(tmp_path, epochs=0) == "--epochs must be at least 1, got 0"
    assert _plan_error(tmp_path, learning_rate=-1.0) == "--lr must be a positive number, got -1.0"
    assert _plan_error(tmp_path, optimizer="adam") == "unknown optimizer 'adam'; valid: sgd, adamw"
    assert _plan_error(tmp_path, batch_size=0) == "--batch-size must be at least 1, got 0"
    assert _plan_error(tmp_path, max_steps=0) == "--max-steps must be at least 1, got 0"
    assert _plan_error(tmp_path, zero_stage=5) == (
        "ZeRO stage 5 (--zero-stage) is not one of 0, 1, 2, 3"
    )


def test_planner_rejects_a_deepspeed_optimizer_section(tmp_path: Path) -> None:
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"optimizer": {"type": "Adam"}}))
    assert _plan_error(tmp_path, deepspeed_config=config).startswith(
        f"DeepSpeed config {config} has an 'optimizer' section"
    )


def test_planner_rejects_finetuned_or_baked_models_and_long_prompts(
    pulled_datasets: Path, tmp_path: Path
) -> None:
    baked = build_model("llama", tmp_path / "baked", max_position_embeddings=512)
    config = json.loads((baked / "config.json").read_text())
    config["caa_bake"] = {"kind": "finetune"}
    (baked / "config.json").write_text(json.dumps(config))
    assert _plan_error(tmp_path, model=str(baked)) == (
        f"{baked} is a caa-bake finetune checkpoint; finetune the original base model"
    )
    short = build_model("llama", tmp_path / "short", max_position_embeddings=64)
    message = _plan_error(tmp_path, model=str(short))
    assert message.startswith("refusal item ")
    assert message.endswith("more than the model's context of 64 tokens")


def test_planner_needs_enough_items_for_one_step(
    pulled_datasets: Path, llama512: Path, tmp_path: Path
) -> None:
    message = _plan_error(tmp_path, model=str(llama512), cpu_ranks=2, batch_size=300)
    assert message == "refusal has 408 items, fewer than one step of 2 rank(s) x batch 300"


def test_plan_of_a_valid_request(pulled_datasets: Path, llama512: Path, tmp_path: Path) -> None:
    plan = plan_finetune(
        FinetuneRequest(
            "refusal", "neg", model=str(llama512), cpu_ranks=2, out=tmp_path / "o", zero_stage=3
        )
    )
    spec = plan.spec
    assert (spec.behavior, spec.direction, spec.target) == ("refusal", "neg", "not_matching")
    assert (spec.world_size, spec.device, spec.backend, spec.zero_stage) == (2, "cpu", "gloo", 3)
    assert (spec.optimizer, spec.learning_rate, spec.epochs, spec.batch_size) == (
        "sgd",
        1e-4,
        1,
        1,
    )
    assert len(plan.examples) == spec.data["items"] == 408
    assert plan.target == tmp_path / "o"
    assert not plan.target.exists()
