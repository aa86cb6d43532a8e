"""``caa-bake datasets pull|list`` from the command line: source precedence, repairs, the
listing of a damaged folder, and bad input (one ``error:`` line, exit 1, nothing written).

Pulls and listings of a clean folder are covered in tests/data/test_download.py; this file
adds what a user sees through ``python -m cli.main``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_runner import assert_one_error, files_under, run_in_process, run_module, workspace
from tiny_models import tree_digest

GENERATE = "caa/generate/refusal/generate_dataset.json"


@pytest.fixture
def mirror(data_source: str | None, tmp_path: Path) -> Path:
    """A private copy of the data mirror (tests may damage it)."""
    if data_source is None or not Path(data_source).is_dir():
        pytest.skip("needs CAA_BAKE_DATA_SOURCE pointing at the data mirror folder")
    return Path(shutil.copytree(data_source, tmp_path / "mirror"))


def _rows(listing: str) -> dict[str, list[str]]:
    lines = listing.splitlines()
    return {line.split()[0]: line.split() for line in lines[2:] if "  " in line}


def test_flag_source_wins_over_the_env_var_then_repairs_a_damaged_file(
    mirror: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws = tmp_path / "ws"
    env = {**workspace(ws), "CAA_BAKE_DATA_SOURCE": str(tmp_path / "not-a-mirror")}
    code, out, err = run_in_process(
        "datasets", "pull", "--source", str(mirror), capsys=capsys, monkeypatch=monkeypatch, env=env
    )
    assert code == 0, err
    assert out.startswith(f"datasets in {ws / 'datasets'}: 41 fetched from {mirror.resolve()}")
    pulled = ws / "datasets"
    (pulled / GENERATE).write_text("[]")  # damaged after the pull
    code, out, err = run_in_process(
        "datasets", "pull", "-s", str(mirror), "-q", capsys=capsys, monkeypatch=monkeypatch
    )
    assert code == 0, err
    assert ": 1 fetched from " in out and ", 40 already present, " in out
    assert (pulled / GENERATE).read_bytes() == (mirror / GENERATE).read_bytes()
    assert [p for p in files_under(ws) if ".pull-" in p] == []


def test_env_var_source_is_used_without_the_flag(
    mirror: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws = tmp_path / "ws"
    env = {**workspace(ws), "CAA_BAKE_DATA_SOURCE": str(mirror)}
    code, out, err = run_in_process(
        "datasets", "pull", capsys=capsys, monkeypatch=monkeypatch, env=env
    )
    assert code == 0, err
    assert f"41 fetched from {mirror.resolve()}" in out
    assert (ws / "datasets" / GENERATE).is_file()


def test_a_bad_mirror_file_changes_nothing(mirror: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "datasets").mkdir(parents=True)
    (ws / "datasets" / "notes.txt").write_text("mine")
    (mirror / GENERATE).write_text("[]")
    before = tree_digest(ws)
    result = run_module(
        "datasets", "pull", "--source", str(mirror), env=workspace(ws), cwd=tmp_path
    )
    line = assert_one_error(result, f"cannot pull {GENERATE}: checksum mismatch: sha256 ")
    assert line.endswith(f"; nothing was changed in {ws / 'datasets'}")
    assert tree_digest(ws) == before
    assert files_under(ws) == ["datasets", "datasets/notes.txt"]


def test_listing_names_a_damaged_file(
    pulled_datasets: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(pulled_datasets, ws / "datasets")
    (ws / "datasets" / GENERATE).write_text(json.dumps([{"question": "only a question"}]))
    (ws / "datasets" / "caa" / "test" / "mmlu").rename(ws / "datasets" / "caa" / "test" / "gone")
    before = tree_digest(ws)
    code, out, err = run_in_process(
        "datasets", "list", capsys=capsys, monkeypatch=monkeypatch, env=workspace(ws)
    )
    assert code == 0, err
    rows = _rows(out)
    assert rows["refusal"][4] == "invalid"
    assert rows["mmlu"][4] == "missing"
    assert rows["sycophancy"][4] == "present"
    problems = [line for line in out.splitlines() if line.startswith("refusal: ")]
    assert len(problems) == 1 and "generate_dataset.json" in problems[0]
    assert "nothing pulled yet" not in out
    assert tree_digest(ws) == before  # listing writes nothing


def test_list_through_the_module_entry_point(pulled_datasets: Path, tmp_path: Path) -> None:
    env = {**workspace(tmp_path / "ws"), "CAA_BAKE_DATASETS_DIR": str(pulled_datasets)}
    code, out, err = run_module("datasets", "list", env=env, cwd=tmp_path)
    assert code == 0, err
    assert out.splitlines()[0] == f"datasets dir: {pulled_datasets}"
    assert _rows(out)["refusal"][1:5] == ["caa", "408", "50", "present"]
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["datasets", "pull", "--source", "ftp://example.org/data"], "ftp://example.org/data"),
        (["datasets", "pull", "--source", "{missing}"], "data source folder "),
    ],
    ids=["scheme", "missing-folder"],
)
def test_bad_sources(
    args: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws = tmp_path / "ws"
    args = [a.replace("{missing}", str(tmp_path / "missing")) for a in args]
    result = run_in_process(*args, capsys=capsys, monkeypatch=monkeypatch, env=workspace(ws))
    assert_one_error(result, message)
    assert files_under(tmp_path) == []


def test_empty_mirror_folder_names_the_first_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tmp_path / "ws"
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    result = run_in_process(
        "datasets", "pull", "--source", str(empty), capsys=capsys, monkeypatch=monkeypatch,
        env=workspace(ws),
    )  # fmt: skip
    line = assert_one_error(result, "cannot pull ")
    assert str(empty) in line and "nothing was changed" in line
    assert not (ws / "datasets").exists()
    assert [p for p in files_under(tmp_path) if ".pull-" in p] == []


@pytest.mark.parametrize(
    "args", [["datasets", "pull", "extra"], ["datasets", "list", "--bogus"], ["datasets", "nope"]]
)
def test_usage_errors(
    args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(
        *args, capsys=capsys, monkeypatch=monkeypatch, env=workspace(tmp_path / "ws")
    )
    assert code == 2
    assert "Usage:" in out + err and "Traceback" not in out + err
    assert files_under(tmp_path) == []
