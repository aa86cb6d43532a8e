"""``atomic_dir`` / ``atomic_file``: outputs appear whole on success, not at all on failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from caa_bake.core.atomic import atomic_dir, atomic_file, default_mode, fsync_tree


class Boom(Exception):
    """Raised inside a context to simulate a failing writer."""


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# ---- atomic_dir -----------------------------------------------------------------------


def test_dir_appears_only_when_the_context_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        assert tmp.is_dir()
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".out.tmp-")
        (tmp / "a.txt").write_text("alpha")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.bin").write_bytes(b"\x00\x01")
        assert not target.exists(), "the target must not appear before the context ends"
    assert _tree(target) == {"a.txt": b"alpha", "sub/b.bin": b"\x00\x01"}
    assert not tmp.exists()
    assert _names(tmp_path) == ["out"]


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_dir_failure_leaves_nothing(tmp_path: Path, error: type[BaseException]) -> None:
    target = tmp_path / "out"
    with pytest.raises(error), atomic_dir(target) as tmp:
        (tmp / "partial.txt").write_text("half")
        raise error()
    assert not target.exists()
    assert not tmp.exists()
    assert _names(tmp_path) == []


def test_dir_creates_missing_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    assert (target / "x").read_text() == "1"
    assert _names(target.parent) == ["out"]


def test_dir_refuses_an_existing_target_without_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("keep me")
    with pytest.raises(FileExistsError), atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _tree(target) == {"old.txt": b"keep me"}
    assert not tmp.exists()
    assert _names(tmp_path) == ["out"]


def test_dir_overwrite_replaces_the_whole_target(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    (target / "shared.txt").write_text("old shared")
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "shared.txt").write_text("new shared")
        assert (target / "old.txt").read_text() == "old", "old target replaced too early"
    # the old folder is replaced, not merged into: old.txt is gone
    assert _tree(target) == {"shared.txt": b"new shared"}
    assert _names(tmp_path) == ["out"], "no .old-/.tmp- leftovers beside the target"


def test_dir_overwrite_failure_keeps_the_old_target(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(Boom), atomic_dir(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise Boom
    assert _tree(target) == {"old.txt": b"old"}
    assert _names(tmp_path) == ["out"]


def test_dir_overwrite_without_an_existing_target(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "x").write_text("1")
    assert _tree(target) == {"x": b"1"}
    assert _names(tmp_path) == ["out"]


def test_dir_temporaries_do_not_collide(tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "a") as first, atomic_dir(tmp_path / "a2") as second:
        assert first != second
        (first / "f").write_text("1")
        (second / "f").write_text("2")
    assert (tmp_path / "a" / "f").read_text() == "1"
    assert (tmp_path / "a2" / "f").read_text() == "2"
    assert _names(tmp_path) == ["a", "a2"]


def test_dir_overwrite_of_a_plain_file_leaves_no_leftover(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("a file, not a folder")
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "x").write_text("1")
    assert _tree(target) == {"x": b"1"}
    assert _names(tmp_path) == ["out"]


def test_fsync_tree_keeps_contents(tmp_path: Path) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "f.txt").write_text("deep")
    (tmp_path / "top.txt").write_text("top")
    before = _tree(tmp_path)
    fsync_tree(tmp_path)
    assert _tree(tmp_path) == before == {"d/e/f.txt": b"deep", "top.txt": b"top"}


# ---- atomic_file ----------------------------------------------------------------------


def test_file_appears_only_when_the_context_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "data.json"
    with atomic_file(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".data.json.tmp-")
        assert tmp.is_file() and tmp.read_bytes() == b""
        tmp.write_text('{"a": 1}')
        assert not target.exists()
    assert target.read_text() == '{"a": 1}'
    assert not tmp.exists()
    assert _names(tmp_path) == ["data.json"]


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_file_failure_leaves_nothing(tmp_path: Path, error: type[BaseException]) -> None:
    target = tmp_path / "data.json"
    with pytest.raises(error), atomic_file(target) as tmp:
        tmp.write_text("partial")
        raise error()
    assert not target.exists()
    assert _names(tmp_path) == []


def test_file_always_replaces_an_existing_target(tmp_path: Path) -> None:
    target = tmp_path / "data.txt"
    target.write_text("old")
    with atomic_file(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    assert _names(tmp_path) == ["data.txt"]


def test_file_failure_keeps_the_existing_target(tmp_path: Path) -> None:
    target = tmp_path / "data.txt"
    target.write_text("old")
    with pytest.raises(Boom), atomic_file(target) as tmp:
        tmp.write_text("new")
        raise Boom
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["data.txt"]


def test_file_failure_after_the_writer_removed_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "data.txt"
    with pytest.raises(Boom), atomic_file(target) as tmp:
        tmp.unlink()
        raise Boom
    assert _names(tmp_path) == []


def test_file_creates_missing_parents(tmp_path: Path) -> None:
    target = tmp_path / "x" / "y" / "data.txt"
    with atomic_file(target) as tmp:
        tmp.write_bytes(b"\xff" * 10)
    assert target.read_bytes() == b"\xff" * 10
    assert _names(target.parent) == ["data.txt"]


def test_file_gets_the_usual_permissions(tmp_path: Path) -> None:
    target = tmp_path / "README.md"
    previous = os.umask(0o022)
    try:
        with atomic_file(target) as tmp:
            tmp.write_text("card")
        assert default_mode() == 0o644
    finally:
        os.umask(previous)
    assert os.stat(target).st_mode & 0o777 == 0o644
