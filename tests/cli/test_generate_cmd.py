"""``caa-bake generate`` / ``judge`` end to end through llama.cpp's server, and their bad
inputs: one ``error:`` line, exit 1, nothing written (the logic itself: tests/generation/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import assert_one_error, files_under, run_in_process, run_module, workspace
from scripted_server import free_port


@pytest.fixture
def env(tmp_path: Path, pulled_datasets: Path) -> dict[str, str]:
    return {**workspace(tmp_path / "ws"), "CAA_BAKE_DATASETS_DIR": str(pulled_datasets)}


def test_help_and_an_unknown_behavior(env: dict[str, str], tmp_path: Path) -> None:
    code, out, _ = run_module("generate", "--help")
    assert code == 0 and "--endpoint-model" in out and "--top-k" in out
    result = run_module("generate", "-b", "nope", "--endpoint", "http://127.0.0.1:1",
                        "--endpoint-model", "m", env=env)  # fmt: skip
    assert_one_error(result, "nope")
    assert files_under(tmp_path / "ws") == []


def test_generate_then_judge_through_llama_cpp_server(
    env: dict[str, str],
    tmp_path: Path,
    llama_endpoint: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out, err = run_in_process(
        "generate", "-b", "survival-instinct", "--mults", "0",
        "--endpoint", llama_endpoint, "--endpoint-model", "smollm2", "--limit", "1",
        "--max-new-tokens", "6", "--run", "r1", "--quiet",
        capsys=capsys, monkeypatch=monkeypatch, env=env,
    )  # fmt: skip
    assert code == 0, err
    assert "1 new rows (0 already done)" in out
    run = tmp_path / "ws" / "results" / "r1"
    rows = [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["survival-instinct/q000/m0/s0"]
    code, out, err = run_in_process(
        "judge", "r1", "--endpoint", llama_endpoint, "--judge-model", "smollm2",
        "--max-tokens", "3", "--quiet",
        capsys=capsys, monkeypatch=monkeypatch, env=env,
    )  # fmt: skip
    assert code == 0, err
    assert "| behavior | m=0 |" in out and "replies were not a score" in out
    assert "wrote " in out and (run / "judge-smollm2" / "table.md").is_file()


def test_bad_endpoints_are_one_line_and_write_nothing(
    env: dict[str, str],
    tmp_path: Path,
    llama_endpoint: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws = tmp_path / "ws"
    dead = f"http://127.0.0.1:{free_port()}"
    result = run_in_process(
        "generate", "-b", "refusal", "--mults", "0", "--endpoint", dead,
        "--endpoint-model", "m", "--tries", "2",
        capsys=capsys, monkeypatch=monkeypatch, env=env,
    )  # fmt: skip
    assert_one_error(result, "cannot reach the server")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("CAA_BAKE_API_KEY", raising=False)
    result = run_in_process(
        "generate", "-b", "refusal", "--mults", "0", "--endpoint", "https://api.example.com",
        "--endpoint-model", "gpt-4o",
        capsys=capsys, monkeypatch=monkeypatch, env=env,
    )  # fmt: skip
    assert_one_error(result, "no API key is set: export CAA_BAKE_API_KEY or OPENAI_API_KEY")
    assert files_under(ws) == []
    # a run to judge, then a judge model the server does not know
    run = ws / "results" / "r"
    run.mkdir(parents=True)
    row = {"id": "refusal/q000/m0/s0", "behavior": "refusal", "mult": 0.0, "question": "q",
           "text": "a"}  # fmt: skip
    (run / "generations.jsonl").write_text(json.dumps(row) + "\n")
    result = run_in_process(
        "judge", "r", "--endpoint", llama_endpoint, "--judge-model", "gpt-4",
        capsys=capsys, monkeypatch=monkeypatch, env=env,
    )  # fmt: skip
    assert_one_error(result, "does not serve a model named 'gpt-4' (--judge-model)")
    assert files_under(run) == ["generations.jsonl"]
