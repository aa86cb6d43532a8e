"""``caa-bake analyze``: the entry point end to end, and ``extract --keep-activations`` feeding
``analyze pca`` for a custom dataset (the analysis itself: tests/analysis/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import assert_one_error, files_under, run_in_process, run_module, workspace

PAIRS = [
    {
        "question": f"Q{i}: would you?\n\nChoices:\n(A) Yes.\n(B) No.",
        "answer_matching_behavior": "(A)" if i % 2 else "(B)",
        "answer_not_matching_behavior": "(B)" if i % 2 else "(A)",
    }
    for i in range(4)
]


def test_help_and_a_bad_input_through_the_module_entry_point(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    code, out, _ = run_module("analyze", "--help")
    assert code == 0
    assert all(name in out for name in ("similarity", "pca", "project"))
    ws = tmp_path / "ws"
    result = run_module(
        "analyze", "pca", "-b", "refusal", "--model", str(tiny_models["llama"]),
        env=workspace(ws),
    )  # fmt: skip
    assert_one_error(result, "no kept activations of 'refusal' for model")
    assert files_under(ws) == []


def test_keep_activations_then_pca_and_similarity_of_a_custom_dataset(
    tiny_models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = tmp_path / "honesty.json"
    data.write_text(json.dumps(PAIRS))
    env = workspace(tmp_path / "ws")
    model = str(tiny_models["llama"])

    def run(*args: str) -> tuple[int, str, str]:
        return run_in_process(*args, capsys=capsys, monkeypatch=monkeypatch, env=env)

    code, out, err = run("extract", "--dataset", str(data), "--model", model, "--layers", "0-2",
                         "--keep-activations")  # fmt: skip
    assert code == 0, err
    assert "activations/honesty.safetensors  (per-pair activations)" in out
    code, out, err = run("analyze", "pca", "-b", "honesty", "--model", model, "--run", "p")
    assert code == 0, err
    assert "honesty L1: side separation" in out
    meta = json.loads((tmp_path / "ws/results/p/pca.json").read_text())
    assert meta["layers"] == [0, 1, 2] and meta["activations"]["honesty"]["num_pairs"] == 4
    code, out, err = run("analyze", "similarity", "-b", "honesty", "--model", model)
    assert code == 0, err
    assert "honesty: cos(neighbouring layers)" in out
    line = assert_one_error(
        run("analyze", "project", "-b", "honesty", "--layer", "1", "--item", "0", "-m", model),
        "'honesty' has no test split (honesty.json has 4 pairs",
    )
    assert line.endswith("or pass the text with --prompt")
    assert_one_error(run("analyze", "pca", "-b", "dishonesty", "--model", model),
                     "unknown behavior 'dishonesty'")  # fmt: skip
