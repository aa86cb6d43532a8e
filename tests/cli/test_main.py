"""The ``caa-bake`` entry point (``python -m cli.main``): help, usage errors, one-line errors,
Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runner import assert_one_error, files_under, run_in_process, run_module, workspace

COMMANDS = ("extract", "export", "verify", "inspect", "unbake", "eval", "sweep", "finetune")


def test_top_level_help_lists_every_command(tmp_path: Path) -> None:
    code, out, err = run_module("--help", env=workspace(tmp_path / "ws"), cwd=tmp_path)
    assert code == 0, err
    assert "Usage: python -m cli.main [OPTIONS] COMMAND [ARGS]..." in out
    assert "Bake CAA steering vectors into standalone Hugging Face checkpoints." in out
    for command in (*COMMANDS, "datasets"):
        assert f"│ {command} " in out, command
    assert files_under(tmp_path) == []


def test_no_arguments_shows_the_help(tmp_path: Path) -> None:
    code, out, err = run_module(env=workspace(tmp_path / "ws"), cwd=tmp_path)
    assert code == 2  # click's "no arguments: show help" status
    assert "Usage: python -m cli.main" in out + err
    assert "finetune" in out + err
    assert files_under(tmp_path) == []


def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    code, out, err = run_module("frobnicate", env=workspace(tmp_path / "ws"), cwd=tmp_path)
    assert code == 2
    assert "No such command 'frobnicate'" in err
    assert "Traceback" not in out + err
    assert files_under(tmp_path) == []


def test_a_user_mistake_is_one_error_line_and_exit_1(tmp_path: Path) -> None:
    missing = tmp_path / "no-mirror"
    result = run_module(
        "datasets", "pull", "--source", str(missing), env=workspace(tmp_path / "ws"), cwd=tmp_path
    )
    assert_one_error(result, str(missing))
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["extract"], ["--behavior", "--all-behaviors", "--layers", "--dataset", "--quiet"]),
        (["export"], ["--behavior", "--layer", "--mult", "--bake", "--out", "--link", "--force"]),
        (["verify"], ["export_dir", "--quiet"]),
        (["inspect"], ["export_dir", "An export folder"]),
        (["unbake"], ["export_dir", "--out", "--link", "--force", "--quiet"]),
        (["eval"], ["--layer", "--behavior", "--mults", "--tasks", "--kinds", "--resume"]),
        (["sweep"], ["--layers", "--mults", "--positions", "--resume", "--quiet"]),
        (["finetune"], ["--behavior", "--direction", "--cpu-ranks", "--gpus", "--lora"]),
        (["datasets"], ["pull", "list"]),
        (["datasets", "pull"], ["--source", "--quiet"]),
        (["datasets", "list"], ["Show every behavior"]),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, list) and value[0].isalpha() else "",
)
def test_help_of_every_command(
    command: list[str],
    expected: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(
        *command, "--help", capsys=capsys, monkeypatch=monkeypatch, env=workspace(tmp_path / "ws")
    )
    assert code == 0, err
    assert "Usage: " in out and f" {' '.join(command)} [OPTIONS]" in out
    for word in expected:
        assert word in out, word
    assert files_under(tmp_path) == []


def _accept_while_running(server: socket.socket, proc: subprocess.Popen[str]) -> socket.socket:
    """The child's first connection to ``server`` (fails if the child exits first)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            connection, _ = server.accept()
            return connection
        except TimeoutError:
            assert proc.poll() is None, proc.communicate()
    raise AssertionError("the pull never connected")


def test_ctrl_c_prints_one_line_and_changes_nothing(tmp_path: Path) -> None:
    """SIGINT while ``datasets pull`` waits on a server that never answers."""
    ws = tmp_path / "ws"
    (ws / "datasets").mkdir(parents=True)
    (ws / "datasets" / "mine.txt").write_text("keep")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(1.0)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/"
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "datasets", "pull", "--source", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **workspace(ws)},
            cwd=tmp_path,
            # a shell may start us with SIGINT ignored; the child needs the default action
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            connection = _accept_while_running(server, proc)
            with connection:  # the pull now waits for a response that never comes
                proc.send_signal(signal.SIGINT)
                _out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == ["error: interrupted"], err
    assert files_under(ws) == ["datasets", "datasets/mine.txt"]  # no staging folder left
