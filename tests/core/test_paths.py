"""``caa_bake.core.paths``: the workspace, its folders and their environment overrides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from caa_bake.core import paths

ENV_VARS = (
    "CAA_BAKE_HOME",
    "CAA_BAKE_DATASETS_DIR",
    "CAA_BAKE_VECTORS_DIR",
    "CAA_BAKE_EXPORTS_DIR",
    "CAA_BAKE_RESULTS_DIR",
    "CAA_BAKE_CACHE",
    "XDG_CACHE_HOME",
)

FOLDERS: list[tuple[Callable[[], Path], str, str]] = [
    (paths.datasets_dir, "datasets", "CAA_BAKE_DATASETS_DIR"),
    (paths.vectors_dir, "vectors", "CAA_BAKE_VECTORS_DIR"),
    (paths.exports_dir, "exported_models", "CAA_BAKE_EXPORTS_DIR"),
    (paths.results_dir, "results", "CAA_BAKE_RESULTS_DIR"),
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No caa-bake variables from the outer environment; HOME and cwd inside tmp_path."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)


def test_workspace_defaults_to_the_current_directory(tmp_path: Path) -> None:
    assert paths.workspace() == tmp_path / "cwd"
    for func, name, _env in FOLDERS:
        assert func() == tmp_path / "cwd" / name


def test_workspace_follows_chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    assert paths.workspace() == other
    assert paths.exports_dir() == other / "exported_models"


def test_caa_bake_home_moves_the_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "ws"
    monkeypatch.setenv("CAA_BAKE_HOME", str(home))
    assert paths.workspace() == home
    for func, name, _env in FOLDERS:
        assert func() == home / name


def test_empty_variables_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.setenv(name, "")
    assert paths.workspace() == tmp_path / "cwd"
    for func, name, _env in FOLDERS:
        assert func() == tmp_path / "cwd" / name
    assert paths.cache_dir() == tmp_path / "home" / ".cache" / "caa-bake"


def test_tilde_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAA_BAKE_HOME", "~/ws")
    monkeypatch.setenv("CAA_BAKE_VECTORS_DIR", "~/vecs")
    monkeypatch.setenv("CAA_BAKE_CACHE", "~/cache")
    assert paths.workspace() == tmp_path / "home" / "ws"
    assert paths.vectors_dir() == tmp_path / "home" / "vecs"
    assert paths.cache_dir() == tmp_path / "home" / "cache"


@pytest.mark.parametrize(("func", "name", "env"), FOLDERS, ids=[f[1] for f in FOLDERS])
def test_each_folder_has_its_own_override(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    func: Callable[[], Path],
    name: str,
    env: str,
) -> None:
    monkeypatch.setenv("CAA_BAKE_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv(env, str(tmp_path / "moved"))
    assert func() == tmp_path / "moved"  # the override wins over CAA_BAKE_HOME
    assert paths.workspace() == tmp_path / "ws"
    for other, other_name, _env in FOLDERS:
        if other is not func:
            assert other() == tmp_path / "ws" / other_name


def test_relative_overrides_stay_relative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAA_BAKE_RESULTS_DIR", "out/results")
    assert paths.results_dir() == Path("out/results")


def test_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert paths.cache_dir() == tmp_path / "home" / ".cache" / "caa-bake"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "xdg" / "caa-bake"
    monkeypatch.setenv("CAA_BAKE_CACHE", str(tmp_path / "explicit"))
    assert paths.cache_dir() == tmp_path / "explicit"
    # the cache is not part of the workspace
    monkeypatch.setenv("CAA_BAKE_HOME", str(tmp_path / "ws"))
    assert paths.cache_dir() == tmp_path / "explicit"


def test_nothing_is_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAA_BAKE_HOME", str(tmp_path / "ws"))
    for func, _name, _env in FOLDERS:
        assert not func().exists()
    assert not paths.cache_dir().exists()
    assert not (tmp_path / "ws").exists()
