"""``caa-bake extract`` option parsing and bad input (one ``error:`` line, exit 1, nothing
written), plus the option combinations that succeed: a named custom dataset and
``--all-behaviors`` from a filled cache.

End-to-end extraction and the first bad-input cases live in tests/steering/test_job.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_runner import assert_one_error, files_under, run_in_process, run_module, workspace
from workspaces import cached_workspace

from caa_bake.data.behaviors import CAA_BEHAVIORS
from caa_bake.steering.vector import SteeringVector, normalize_vectors

PAIRS = [
    {
        "question": f"Q{i}: would you?\n\nChoices:\n(A) Yes.\n(B) No.",
        "answer_matching_behavior": "(A)" if i % 2 else "(B)",
        "answer_not_matching_behavior": "(B)" if i % 2 else "(A)",
    }
    for i in range(4)
]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "custom.json"
    path.parent.mkdir()
    path.write_text(json.dumps(PAIRS))
    return path


def test_missing_behavior_through_the_module_entry_point(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    result = run_module("extract", "--layers", "1", env=workspace(ws), cwd=tmp_path)
    assert_one_error(result, "name a behavior (--behavior B), --all-behaviors, or --dataset PATH")
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layers", "abc"], "cannot read layers 'abc': use N, A-B, a comma list, or 'all'"),
        (["--layers", "3-1"], "layer range '3-1' is empty (start > end)"),
        (["--layers", "1,,2"], "cannot read layers '1,,2'"),
        (["--layers", "0-4"], "layer 4 is out of range: the model has 4 layers (0-3)"),
        (["--dtype", "float8"], "unknown dtype 'float8'; use auto, float32 (fp32), bfloat16"),
        (["--device", "tpu"], "unknown device 'tpu'; use cpu, cuda or auto"),
        (["--behavior", "a", "--behavior", "b"], "--dataset gives one behavior"),
        (["--all-behaviors"], "--dataset gives one behavior"),
    ],
    ids=["letters", "reversed-range", "empty-part", "out-of-range", "dtype", "device",
         "two-names", "all-behaviors"],
)  # fmt: skip
def test_bad_options_with_a_custom_dataset(
    args: list[str],
    message: str,
    tiny_models: dict[str, Path],
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws = tmp_path / "ws"
    result = run_in_process(
        "extract", "--dataset", str(dataset), "--model", str(tiny_models["gpt2"]), *args,
        capsys=capsys, monkeypatch=monkeypatch, env=workspace(ws),
    )  # fmt: skip
    assert_one_error(result, message)
    assert files_under(ws) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "{tmp}/nope.json"], "nope.json"),
        (["--dataset", "{tmp}/data/custom.json", "--model", "{tmp}/no-model"], "does not exist"),
        (["--all-behaviors"], "caa-bake datasets pull"),
    ],
    ids=["missing-dataset", "missing-model", "not-pulled"],
)
def test_bad_files_and_names(
    args: list[str],
    message: str,
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws = tmp_path / "ws"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run_in_process(
        "extract", *args, capsys=capsys, monkeypatch=monkeypatch, env=workspace(ws)
    )
    assert_one_error(result, message)
    assert files_under(ws) == []


def test_batch_size_below_one_is_a_usage_error(
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws = tmp_path / "ws"
    code, out, err = run_in_process(
        "extract", "--dataset", str(dataset), "--batch-size", "0",
        capsys=capsys, monkeypatch=monkeypatch, env=workspace(ws),
    )  # fmt: skip
    assert code == 2
    assert "--batch-size" in err and "Traceback" not in out + err
    assert files_under(ws) == []


def test_behavior_names_a_custom_dataset(
    tiny_models: dict[str, Path],
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws = tmp_path / "ws"
    code, out, err = run_in_process(
        "extract", "-b", "my-behavior", "--dataset", str(dataset), "--model",
        str(tiny_models["llama"]), "-l", "0,2", "--batch-size", "3", "--dtype", "float32",
        "--device", "cpu", capsys=capsys, monkeypatch=monkeypatch, env=workspace(ws),
    )  # fmt: skip
    assert code == 0, err
    path = ws / "vectors" / "llama" / "my-behavior.safetensors"
    assert out.startswith(f"{path}  (4 pairs; norms L0=")
    assert "L2=" in out
    vec = SteeringVector.load(path)
    assert vec.layer_ids == [0, 2]
    assert (vec.metadata["behavior"], vec.metadata["dataset_file"]) == (
        "my-behavior",
        "custom.json",
    )
    assert files_under(ws / "vectors") == ["llama", "llama/my-behavior.safetensors"]


def test_all_behaviors_normalizes_the_cached_set(
    tiny_models: dict[str, Path],
    pulled_datasets: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = cached_workspace(tmp_path / "ws", tiny_models["llama"], pulled_datasets)
    raw_dir = Path(env["CAA_BAKE_VECTORS_DIR"]) / "llama"
    raw = {b: SteeringVector.load(raw_dir / f"{b}.safetensors") for b in CAA_BEHAVIORS}
    code, out, err = run_in_process(
        "extract", "--all-behaviors", "--layers", "1", "--model", str(tiny_models["llama"]),
        capsys=capsys, monkeypatch=monkeypatch, env={**env, "CAA_BAKE_QUIET": "1"},
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 * len(CAA_BEHAVIORS)
    want = normalize_vectors({b: v.select([1]) for b, v in raw.items()})
    for behavior in CAA_BEHAVIORS:
        path = raw_dir / "normalized" / f"{behavior}.safetensors"
        assert f"{path}  (normalized with 7 behaviors: {behavior})" in lines
        assert torch.allclose(SteeringVector.load(path)[1], want[behavior][1])
