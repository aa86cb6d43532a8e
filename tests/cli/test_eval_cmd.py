"""``caa-bake eval`` and ``caa-bake sweep``: option parsing and bad input through the entry
point (one ``error:`` line, exit 1, no results folder).

Successful runs are covered in tests/evaluation/test_evaluate.py and test_sweep.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import assert_one_error, files_under, run_in_process, run_module, workspace
from tiny_models import tree_digest


@pytest.fixture
def env(pulled_datasets: Path, tmp_path: Path) -> dict[str, str]:
    """A fresh workspace that reads the session's pulled datasets."""
    return {**workspace(tmp_path / "ws"), "CAA_BAKE_DATASETS_DIR": str(pulled_datasets)}


def _no_results(env: dict[str, str]) -> None:
    assert files_under(Path(env["CAA_BAKE_HOME"])) == []


def test_sweep_without_a_non_zero_multiplier_through_the_module(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = run_module("sweep", "-b", "refusal", "--mults", "0", env=env, cwd=tmp_path)
    assert_one_error(result, "a sweep needs at least one non-zero multiplier (e.g. --mults -1,1)")
    _no_results(env)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mults", "abc"], "cannot read multipliers 'abc': use numbers separated by commas"),
        (["--mults", "1,nan"], "multiplier must be a finite number, got nan"),
        (["--mults", " , "], "no multipliers given (e.g. --mults -1,0,1)"),
        (["--kinds", "baked,bogus"], "unknown kind(s) bogus; valid: baked, hooks"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--limit", "-1"], "--limit must be a positive number of items per task, got -1"),
        (["--behavior", "refusl"], "unknown behavior 'refusl'"),
        (["--device", "tpu"], "unknown device 'tpu'; use cpu, cuda or auto"),
        (["--layer", "4"], "layer 4 is out of range: the model has 4 layers (0-3)"),
        (["--run", "bad name"], "run name 'bad name' must use letters, digits"),
        (["--resume"], "--resume needs the --run name of the interrupted run"),
        (["--finetuned", "{tmp}/no-such-ft"], "no-such-ft does not exist"),
    ],
    ids=["mults-text", "mults-nan", "mults-empty", "kinds", "batch", "limit", "unknown",
         "device", "layer", "run-name", "resume", "finetuned"],
)  # fmt: skip
def test_eval_bad_options(
    args: list[str],
    message: str,
    env: dict[str, str],
    tiny_models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    base = ["eval", "-b", "refusal", "-l", "1", "--model", str(tiny_models["llama"])]
    result = run_in_process(*base, *args, capsys=capsys, monkeypatch=monkeypatch, env=env)
    assert_one_error(result, message)
    _no_results(env)


def test_eval_without_a_behavior(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_in_process("eval", "-l", "1", capsys=capsys, monkeypatch=monkeypatch, env=env)
    assert_one_error(result, "name a behavior (--behavior B) or pass --all-behaviors")
    _no_results(env)


def test_eval_needs_a_layer(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run_in_process(
        "eval", "-b", "refusal", capsys=capsys, monkeypatch=monkeypatch, env=env
    )
    assert code == 2
    assert "Missing option" in err and "--layer" in err
    assert "Traceback" not in out + err
    _no_results(env)


def test_an_existing_run_folder_is_left_alone(
    env: dict[str, str],
    tiny_models: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = Path(env["CAA_BAKE_RESULTS_DIR"]) / "mine"
    run.mkdir(parents=True)
    (run / "results.md").write_text("earlier results")
    before = tree_digest(run)
    result = run_in_process(
        "eval", "-b", "refusal", "-l", "1", "--model", str(tiny_models["llama"]), "--run", "mine",
        capsys=capsys, monkeypatch=monkeypatch, env=env,
    )  # fmt: skip
    assert_one_error(result, f"{run} already holds results; pick another --run, --resume it")
    assert tree_digest(run) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--positions", "middle"], "unknown --positions 'middle'; use all or reference"),
        (["--mults", "0,0.0,-0"], "a sweep needs at least one non-zero multiplier"),
        (["--layers", "2-9"], "layer 4 is out of range: the model has 4 layers (0-3)"),
        (["--layers", "x"], "cannot read layers 'x'"),
        (["--limit", "0"], "--limit must be a positive number of items per task, got 0"),
        (["--behavior", "refusl"], "unknown behavior 'refusl'"),
        (["--resume"], "--resume needs the --run name of the interrupted run"),
    ],
    ids=["positions", "zero-mults", "layers-range", "layers-text", "limit", "behavior", "resume"],
)
def test_sweep_bad_options(
    args: list[str],
    message: str,
    env: dict[str, str],
    tiny_models: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = ["sweep", "-b", "refusal", "--model", str(tiny_models["gpt2"])]
    result = run_in_process(*base, *args, capsys=capsys, monkeypatch=monkeypatch, env=env)
    assert_one_error(result, message)
    _no_results(env)


def test_eval_and_sweep_need_pulled_datasets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = workspace(tmp_path / "ws")
    for command in (["eval", "-l", "1"], ["sweep"]):
        result = run_in_process(
            *command, "-b", "refusal", capsys=capsys, monkeypatch=monkeypatch, env=env
        )
        assert_one_error(result, "caa-bake datasets pull")
    _no_results(env)
