"""Run folders and their append-only JSONL rows: whole rows, torn tails, resume, settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caa_bake.core import CaaBakeError
from caa_bake.generation.runs import RowFile, read_rows, resolve_run, run_folder

ARGS = {"must_match": ("kind", "sampler"), "rows_name": "rows.jsonl"}


def test_rows_are_appended_whole_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    with RowFile(path) as rows:
        assert rows.done == {}
        rows.append({"id": "a", "text": "é\nnew line inside"})
        rows.append({"id": "b", "text": "x"})
    assert path.read_bytes().count(b"\n") == 2  # the newline inside the text is escaped
    assert [r["id"] for r in read_rows(path)] == ["a", "b"]
    again = RowFile(path)
    assert set(again.done) == {"a", "b"} and again.done["a"]["text"] == "é\nnew line inside"


def test_a_torn_last_line_is_dropped_and_cut_off_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    whole = json.dumps({"id": "a"}) + "\n"
    path.write_text(whole + '{"id": "b", "te')  # killed in the middle of a write
    assert [r["id"] for r in read_rows(path)] == ["a"]
    with RowFile(path) as rows:
        assert set(rows.done) == {"a"}
        rows.append({"id": "b"})
    assert path.read_text() == whole + json.dumps({"id": "b"}) + "\n"


def test_a_line_edited_into_garbage_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "a"}\nnot json\n')
    with pytest.raises(CaaBakeError, match="line 2 is not JSON"):
        read_rows(path)


def test_run_folder_creates_resumes_and_refuses_other_settings(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    manifest = {"kind": "generate", "sampler": {"greedy": True}, "tool": "1"}
    with run_folder(folder, manifest, **ARGS) as made:
        RowFile(made / "rows.jsonl").append({"id": "a"})
    assert json.loads((folder / "run.json").read_text()) == manifest
    # same settings (another tool version is fine): resumes
    with run_folder(folder, {**manifest, "tool": "2"}, **ARGS):
        pass
    with (
        pytest.raises(CaaBakeError, match=r"other settings \(sampler differ\).*--force"),
        run_folder(folder, {**manifest, "sampler": {"greedy": False}}, **ARGS),
    ):
        pass
    # --force starts afresh
    with run_folder(folder, {**manifest, "sampler": {}}, **ARGS, force=True):
        pass
    assert not (folder / "rows.jsonl").exists()


def test_a_failed_start_leaves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    with pytest.raises(RuntimeError), run_folder(folder, {"kind": "g"}, **ARGS):
        raise RuntimeError("failed before the first row")
    assert list(tmp_path.iterdir()) == []
    # once a row is written, a failure keeps the folder and its rows
    with pytest.raises(RuntimeError), run_folder(folder, {"kind": "g"}, **ARGS) as made:
        RowFile(made / "rows.jsonl").append({"id": "a"})
        raise RuntimeError("failed later")
    assert [r["id"] for r in read_rows(folder / "rows.jsonl")] == ["a"]


def test_resolve_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAA_BAKE_RESULTS_DIR", str(tmp_path))
    (tmp_path / "r1").mkdir()
    assert resolve_run("r1") == tmp_path / "r1"
    assert resolve_run(tmp_path / "r1") == tmp_path / "r1"
    with pytest.raises(CaaBakeError, match="no run folder 'r2'"):
        resolve_run("r2")
    with pytest.raises(CaaBakeError, match="not a run folder"):
        with run_folder(tmp_path / "y", {}, **ARGS):
            (tmp_path / "y" / "run.json").unlink()
        with run_folder(tmp_path / "y", {}, **ARGS):
            pass
