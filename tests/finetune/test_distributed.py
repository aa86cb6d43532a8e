"""The real 2-rank CPU path: ``caa-bake finetune --cpu-ranks 2`` with DeepSpeed ZeRO-2 and ZeRO-3.

Every run goes through the CLI entry point, spawns two gloo ranks and trains a tiny random
Llama for a few steps on the refusal generate split. The checks read what the run left on
disk: the per-rank logs (items and loss of every step, final weights hash), the checkpoint
(reloaded with stock transformers) and its provenance block.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file
from tiny_models import build_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from caa_bake.data.datasets import dataset_path, file_sha256, load_pairs
from caa_bake.finetune.data import global_schedule, rank_schedule
from caa_bake.finetune.listing import list_finetuned
from caa_bake.finetune.log import RankLog, read_rank_logs
from caa_bake.finetune.weights import state_sha256
from caa_bake.models.loading import resolve_model
from caa_bake.models.prompts import encode_prompt, letter_token_ids

pytest.importorskip("deepspeed", reason="finetuning needs the finetune extra (deepspeed, peft)")

STEPS = 12
LR = "0.5"
BEHAVIOR = "refusal"
N_ITEMS = 408


@dataclass(frozen=True)
class Run:
    """One finished finetune run."""

    out: Path
    model: Path
    stage: int
    logs: list[RankLog]

    @property
    def block(self) -> dict[str, Any]:
        block: dict[str, Any] = json.loads((self.out / "config.json").read_text())["caa_bake"]
        return block


@pytest.fixture(scope="module")
def ft_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny Llama / GPT-2 whose context (512) holds every refusal prompt."""
    root = tmp_path_factory.mktemp("ft-models")
    return {
        "llama": build_model("llama", root / "llama", max_position_embeddings=512),
        "gpt2": build_model("gpt2", root / "gpt2", n_positions=512),
    }


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc: subprocess.CompletedProcess[str] = run_cli("finetune", *args)
    return proc


def _finetune(
    out: Path, *args: str, runner: Callable[..., subprocess.CompletedProcess[str]] = _cli
) -> subprocess.CompletedProcess[str]:
    """``caa-bake finetune`` (or ``runner``) on refusal/pos with the test's step count."""
    return runner(
        "--behavior",
        BEHAVIOR,
        "--direction",
        "pos",
        "--max-steps",
        str(STEPS),
        "--lr",
        LR,
        "--out",
        str(out),
        "--quiet",
        *args,
    )


def _run(root: Path, model: Path, stage: int, ranks: int, *args: str) -> Run:
    """Finetune into ``root/exports/ft`` with ``ranks`` CPU ranks; checks the run succeeded."""
    out = root / "exports" / "ft"
    proc = _finetune(
        out, "--model", str(model), "--zero-stage", str(stage), "--cpu-ranks", str(ranks), *args
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"finetuned: {out}"
    assert sorted(p.name for p in out.parent.iterdir()) == ["ft"]  # no temp folder left
    return Run(out, model, stage, read_rank_logs(out, ranks))


@pytest.fixture(scope="module")
def zero2_run(
    pulled_datasets: Path, ft_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Run:
    return _run(tmp_path_factory.mktemp("zero2"), ft_models["llama"], 2, 2)


@pytest.fixture(scope="module")
def zero3_run(
    pulled_datasets: Path, ft_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Run:
    return _run(tmp_path_factory.mktemp("zero3"), ft_models["llama"], 3, 2)


@pytest.fixture(params=[2, 3], ids=["zero2", "zero3"])
def two_rank_run(request: pytest.FixtureRequest) -> Run:
    run: Run = request.getfixturevalue(f"zero{request.param}_run")
    return run


def test_each_step_gives_the_ranks_different_items(two_rank_run: Run) -> None:
    expected = global_schedule(N_ITEMS, world_size=2, batch_size=1, epochs=1, seed=0)[:STEPS]
    logs = two_rank_run.logs
    assert [log.rank for log in logs] == [0, 1]
    for rank, log in enumerate(logs):
        assert [s.indices for s in log.steps] == rank_schedule(expected, rank, 1)
    for s in range(STEPS):
        assert logs[0].steps[s].indices != logs[1].steps[s].indices
    seen = [i for log in logs for step in log.steps for i in step.indices]
    assert len(seen) == len(set(seen)) == 2 * STEPS


def test_both_ranks_end_with_identical_weights(two_rank_run: Run) -> None:
    first, second = two_rank_run.logs
    assert first.weights_sha256 == second.weights_sha256
    assert first.saved_sha256 == first.weights_sha256
    assert second.saved_sha256 is None


def _model_state(folder: Path) -> tuple[Any, dict[str, Any]]:
    """The checkpoint loaded by stock transformers, and its loading info."""
    loaded: Any = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, output_loading_info=True
    )
    return loaded[0], loaded[1]


def test_checkpoint_loads_in_stock_transformers(two_rank_run: Run) -> None:
    model, info = _model_state(two_rank_run.out)
    assert info == {
        "missing_keys": set(),
        "unexpected_keys": set(),
        "mismatched_keys": set(),
        "error_msgs": [],
    }
    assert state_sha256(model.state_dict()) == two_rank_run.logs[0].saved_sha256
    base, _ = _model_state(two_rank_run.model)
    assert state_sha256(base.state_dict()) != state_sha256(model.state_dict())
    template = AutoTokenizer.from_pretrained(two_rank_run.model).chat_template
    assert AutoTokenizer.from_pretrained(two_rank_run.out).chat_template == template


def _mean_target_loss(folder: Path, indices: list[int]) -> float:
    """Cross-entropy of the matching letter after '(' on ``indices``, computed independently."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    letters = letter_token_ids(tokenizer)
    pairs = load_pairs(BEHAVIOR)
    losses = []
    for index in indices:
        ids = encode_prompt(tokenizer, pairs[index].question, "(").input_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        target = letters[pairs[index].matching[1]]
        losses.append(-float(torch.log_softmax(logits, dim=-1)[target]))
    return sum(losses) / len(losses)


def test_loss_decreases(two_rank_run: Run) -> None:
    logs = two_rank_run.logs
    per_step = [(a.loss + b.loss) / 2 for a, b in zip(logs[0].steps, logs[1].steps, strict=True)]
    assert sum(per_step[-4:]) / 4 < sum(per_step[:4]) / 4
    trained = [i for log in logs for step in log.steps for i in step.indices]
    before = _mean_target_loss(two_rank_run.model, trained)
    after = _mean_target_loss(two_rank_run.out, trained)
    assert after < before - 1.0


def test_provenance_block(two_rank_run: Run, pulled_datasets: Path) -> None:
    block = two_rank_run.block
    ref = resolve_model(str(two_rank_run.model))
    assert block["kind"] == "finetune"
    assert (block["behavior"], block["direction"], block["target"]) == (BEHAVIOR, "pos", "matching")
    assert block["base"]["weights_fingerprint"] == ref.weights_fingerprint
    assert block["base"]["model_type"] == "llama"
    data_file = dataset_path(BEHAVIOR, "generate")
    assert block["data"]["sha256"] == file_sha256(data_file)
    assert block["data"]["items"] == N_ITEMS
    assert block["hyperparameters"] == {
        "epochs": 1,
        "learning_rate": 0.5,
        "optimizer": "sgd",
        "weight_decay": 0.0,
        "per_device_batch_size": 1,
        "global_batch_size": 2,
        "seed": 0,
        "max_steps": STEPS,
        "training_dtype": "float32",
        "lora": None,
    }
    dist = block["distributed"]
    assert (dist["world_size"], dist["device"], dist["backend"]) == (2, "cpu", "gloo")
    assert dist["zero_stage"] == two_rank_run.stage
    assert dist["deepspeed_config"]["zero_optimization"]["stage"] == two_rank_run.stage
    assert dist["deepspeed_config"]["train_batch_size"] == 2
    assert block["training"]["steps"] == STEPS
    assert block["training"]["samples"] == 2 * STEPS
    assert block["training"]["weights_sha256"] == two_rank_run.logs[0].weights_sha256
    card = (two_rank_run.out / "README.md").read_text()
    assert f"towards the answers **matching** the `{BEHAVIOR}` behavior" in card
    assert f"ZeRO stage {two_rank_run.stage}" in card


def test_listed_for_eval(two_rank_run: Run, pulled_datasets: Path) -> None:
    ref = resolve_model(str(two_rank_run.model))
    root = two_rank_run.out.parent
    found = list_finetuned(ref, BEHAVIOR, root=root)
    assert [(f.path, f.direction, f.label) for f in found] == [
        (two_rank_run.out, "pos", f"ft-pos-sgd-lr{LR}-{STEPS}steps")
    ]
    assert list_finetuned(ref, BEHAVIOR, "neg", root=root) == []
    assert list_finetuned(ref, "sycophancy", root=root) == []


def test_two_ranks_equal_one_rank_with_twice_the_batch(zero2_run: Run, tmp_path: Path) -> None:
    one = _run(tmp_path, zero2_run.model, 2, 1, "--batch-size", "2")
    assert [s.indices for s in one.logs[0].steps] == [
        a.indices + b.indices for a, b in zip(*(log.steps for log in zero2_run.logs), strict=True)
    ]
    single = load_file(one.out / "model.safetensors")
    double = load_file(zero2_run.out / "model.safetensors")
    base = load_file(zero2_run.model / "model.safetensors")
    assert max(float((single[k] - double[k]).abs().max()) for k in base) < 1e-5
    assert max(float((base[k] - double[k]).abs().max()) for k in base) > 0.1


def test_lora_is_merged_into_a_plain_checkpoint(
    pulled_datasets: Path, ft_models: dict[str, Path], tmp_path: Path
) -> None:
    run = _run(
        tmp_path,
        ft_models["gpt2"],
        2,
        2,
        "--lora",
        "--lora-r",
        "4",
        "--optimizer",
        "adamw",
    )
    first, second = run.logs
    assert first.weights_sha256 == second.weights_sha256
    model, info = _model_state(run.out)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert not any("lora" in name for name in model.state_dict())
    assert state_sha256(model.state_dict()) == first.saved_sha256
    base = load_file(ft_models["gpt2"] / "model.safetensors")
    merged = load_file(run.out / "model.safetensors")
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    assert changed and all(k.endswith("weight") for k in changed)
    assert run.block["hyperparameters"]["lora"] == {
        "r": 4,
        "alpha": 32,
        "dropout": 0.0,
        "target_modules": "all-linear",
    }


def test_torchrun_launch_trains_the_same_weights(zero2_run: Run, tmp_path: Path) -> None:
    """The documented external-launcher path (``torchrun`` / ``deepspeed`` run every rank)."""

    def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        return subprocess.run(
            [*command, "-m", "cli.finetune_cmd", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdin=subprocess.DEVNULL,
            timeout=600,
            cwd=Path(__file__).parents[2],
        )

    out = tmp_path / "exports" / "ft"
    proc = _finetune(out, "--model", str(zero2_run.model), runner=torchrun)
    assert proc.returncode == 0, proc.stderr
    block = json.loads((out / "config.json").read_text())["caa_bake"]
    assert block["distributed"]["launcher"] == "external"
    assert block["training"]["weights_sha256"] == zero2_run.logs[0].weights_sha256


def test_a_crashing_rank_leaves_nothing_behind(
    pulled_datasets: Path, ft_models: dict[str, Path], tmp_path: Path
) -> None:
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 2, "reduce_bucket_size": "lots"}}))
    out = tmp_path / "exports" / "ft"
    proc = _finetune(
        out,
        "--model",
        str(ft_models["llama"]),
        "--cpu-ranks",
        "2",
        "--deepspeed-config",
        str(config),
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: rank ")
    assert "failed (exit code 1): pydantic_core._pydantic_core.ValidationError: " in lines[0]
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    log = Path(lines[0].rsplit("(full log: ", 1)[1].rstrip(")"))
    assert "reduce_bucket_size" in log.read_text()
    shutil.rmtree(log.parent)


def test_sigterm_stops_the_ranks_and_leaves_nothing_behind(
    pulled_datasets: Path, ft_models: dict[str, Path], tmp_path: Path
) -> None:
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "exports" / "ft"
    args = ["--behavior", BEHAVIOR, "--direction", "pos", "--epochs", "100", "--cpu-ranks", "2"]
    args += ["--model", str(ft_models["llama"]), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "finetune", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    launcher = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    while len(launcher.children()) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    ranks = launcher.children()
    assert len(ranks) == 2
    assert {p.name[:8] for p in out.parent.iterdir()} == {".ft.tmp-"}  # folder + owner lock
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert stderr.strip().splitlines() == [
        f"error: terminated (SIGTERM); nothing was written to {out}"
    ]
    assert list(out.parent.iterdir()) == []
    _, alive = psutil.wait_procs(ranks, timeout=15)
    assert alive == []


def _export_has_vector_from() -> bool:
    import inspect

    from caa_bake.bake.bakes import resolve_bakes

    return "vector_model" in inspect.signature(resolve_bakes).parameters


@pytest.mark.skipif(
    not _export_has_vector_from(), reason="needs `caa-bake export --vector-from` (export.py)"
)
def test_combined_model_bakes_the_base_vector_into_the_finetuned_one(
    zero2_run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from caa_bake.steering.vector import SteeringVector, vector_path

    env = {"CAA_BAKE_VECTORS_DIR": str(tmp_path / "vectors")}
    out = tmp_path / "combined"
    args = ["--behavior", BEHAVIOR, "--layer", "1", "--mult", "2", "--no-normalize"]
    proc = run_cli(
        "export",
        "--model",
        str(zero2_run.out),
        "--vector-from",
        str(zero2_run.model),
        *args,
        "--out",
        str(out),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "verify: OK" in proc.stdout
    block = json.loads((out / "config.json").read_text())["caa_bake"]
    assert block["source"]["path"] == str(zero2_run.out)
    assert block["source"]["finetune"] == zero2_run.block
    assert block["bakes"][0]["vector_source"] == f"model:{zero2_run.model}"
    monkeypatch.setenv("CAA_BAKE_VECTORS_DIR", env["CAA_BAKE_VECTORS_DIR"])
    base_vector = SteeringVector.load(vector_path(zero2_run.model.name, BEHAVIOR))
    assert (
        base_vector.metadata["weights_fingerprint"]
        == zero2_run.block["base"]["weights_fingerprint"]
    )
    assert block["bakes"][0]["vector_sha256"] == base_vector.sha256(1)
