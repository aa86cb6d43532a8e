"""``kill -9`` during ``caa-bake export``: no half-written target, no debris after the next run.

Real export subprocesses of a tiny sharded model are SIGKILLed at several moments (the test
hook ``CAA_BAKE_TEST_EXPORT_DELAY`` pauses after each file written). The next export into
the same folder must remove their temporary folders, and must leave alone the temporary
folder of an export that is still running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from tiny_models import build_model, tree_digest

from caa_bake.steering.vector import SteeringVector

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_and_vector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("kill")
    src = build_model("llama", root / "src", max_shard_size="100KB")
    gen = torch.Generator().manual_seed(3)
    vector = SteeringVector({1: torch.randn(32, generator=gen)})
    return src, vector.save(root / "v.safetensors")


class Exports:
    """Starts ``caa-bake export`` subprocesses; kills whatever is left at the end."""

    def __init__(self, src: Path, vector: Path) -> None:
        self.src, self.vector = src, vector
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, target: Path, *extra: str, delay: float | None = None) -> subprocess.Popen[str]:
        env = {**os.environ, "CAA_BAKE_QUIET": "1", "PYTHONPATH": str(ROOT)}
        env.pop("CAA_BAKE_TEST_EXPORT_DELAY", None)
        if delay is not None:
            env["CAA_BAKE_TEST_EXPORT_DELAY"] = str(delay)
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "export", "--model", str(self.src),
             "--bake", f"{self.vector}:1:1", "--out", str(target), "--no-verify", *extra],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def run(self, target: Path, *extra: str) -> str:
        """Export to completion; returns its stderr."""
        proc = self.start(target, *extra)
        _out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        return err

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=60)


@pytest.fixture()
def exports(model_and_vector: tuple[Path, Path]) -> Iterator[Exports]:
    runner = Exports(*model_and_vector)
    yield runner
    runner.close()


def _temporaries(target: Path) -> list[Path]:
    """The temporary folders of exports to ``target`` (their owner locks not included)."""
    found = target.parent.glob(f".{target.name}.tmp-*") if target.parent.exists() else []
    return [p for p in found if p.is_dir()]


def _wait_for(proc: subprocess.Popen[str], ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 300
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
            pytest.fail(f"the export never reached '{what}': {err}")
        time.sleep(0.05)


def _reached(target: Path, pattern: str) -> Callable[[], bool]:
    """True once a temporary folder of ``target`` holds a file matching ``pattern``."""
    return lambda: any(any(tmp.glob(pattern)) for tmp in _temporaries(target))


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _without_card(digest: dict[str, str]) -> dict[str, str]:
    """An export's files but its model card (which names the export folder)."""
    return {k: v for k, v in digest.items() if k != "README.md"}


def test_kill_9_at_several_moments_then_the_next_export_cleans_up(
    exports: Exports, tmp_path: Path
) -> None:
    parent = tmp_path / "exports"
    exports.run(parent / "ref")
    reference = _without_card(tree_digest(parent / "ref"))
    src_before = tree_digest(exports.src)

    # (moment, target, extra args, delay, temporary-folder content that marks the moment)
    moments = [
        ("first shard copied", parent / "early", (), 300.0, "model-00001-of-*.safetensors"),
        ("all written, not yet renamed", parent / "late", (), 5.0, "README.md"),
        ("--force over an old export", parent / "ref", ("--force",), 5.0, "README.md"),
    ]
    running = [(m, t, exports.start(t, *x, delay=d), p) for m, t, x, d, p in moments]
    live_target = parent / "live"  # an export still running when the next one sweeps
    live = exports.start(live_target, delay=300)
    for what, target, proc, pattern in running:
        # freeze each at its moment (a stopped writer is alive: sweeps must skip it), so
        # that no export starting later sweeps the others before the kills
        _wait_for(proc, _reached(target, pattern), what)
        proc.send_signal(signal.SIGSTOP)
    _wait_for(live, _reached(live_target, "model-*"), "live export")
    [live_tmp] = _temporaries(live_target)
    live_before = tree_digest(live_tmp)
    for _what, _target, proc, _pattern in running:
        _kill(proc)

    stale = [tmp for _m, target, _p, _x in running for tmp in _temporaries(target)]
    assert len(stale) == 3
    for _what, target, _proc, _pattern in running:  # absent, or complete (the old one)
        assert not target.exists() or _without_card(tree_digest(target)) == reference
    assert (parent / "ref").exists(), "--force must keep the old export until the new is whole"

    err = exports.run(parent / "next")
    assert "caa-bake: removed 3 stale temporaries beside" in err, err
    assert "left by killed runs (pid " in err
    assert all(not tmp.exists() for tmp in stale)
    names = sorted(p.name for p in parent.iterdir())
    assert names == sorted(["next", "ref", live_tmp.name, live_tmp.name + ".lock"])
    assert tree_digest(live_tmp) == live_before, "a live export's folder was touched"
    assert live.poll() is None
    assert _without_card(tree_digest(parent / "next")) == reference, "exports are unchanged"
    assert tree_digest(exports.src) == src_before
