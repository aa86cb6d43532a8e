"""Running ``caa-bake`` in tests: as a process (``python -m cli.main``) or in this process.

The process form is the real entry point end to end (exit status, stderr). It costs an
interpreter start plus whatever the command imports (torch and transformers for most
commands: seconds), so tests use it for a few cases each and call :func:`cli.main.main`
in-process for the rest: the same code path below ``sys.exit``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

__all__ = ["Result", "assert_one_error", "files_under", "run_in_process", "run_module", "workspace"]

#: (exit code, stdout, stderr)
Result = tuple[int, str, str]


def workspace(root: Path) -> dict[str, str]:
    """Environment variables pinning every caa-bake folder inside ``root`` (not created)."""
    return {
        "CAA_BAKE_HOME": str(root),
        "CAA_BAKE_DATASETS_DIR": str(root / "datasets"),
        "CAA_BAKE_VECTORS_DIR": str(root / "vectors"),
        "CAA_BAKE_EXPORTS_DIR": str(root / "exported_models"),
        "CAA_BAKE_RESULTS_DIR": str(root / "results"),
        "CAA_BAKE_QUIET": "1",
    }


def run_module(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
    """``python -m cli.main ARGS`` in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    return proc.returncode, proc.stdout, proc.stderr


def run_in_process(
    *args: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str] | None = None,
) -> Result:
    """``caa-bake ARGS`` through :func:`cli.main.main` in this process."""
    from cli.main import main

    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["caa-bake", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else (0 if code is None else 1)), out, err


def assert_one_error(result: Result, message: str) -> str:
    """Exit 1, stderr is exactly one ``error: ...`` line containing ``message``; returns it."""
    code, out, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    assert message in lines[0], lines[0]
    assert "Traceback" not in out + err
    return lines[0]


def files_under(root: Path) -> list[str]:
    """Every path under ``root`` (relative, sorted); [] when it does not exist."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))
