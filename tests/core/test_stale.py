"""Temporaries of killed writers are swept; those of live writers never are.

Each writer here is a real Python subprocess using :mod:`caa_bake.core.atomic`, killed with
SIGKILL at a chosen moment (the kernel then drops its flock, exactly as after ``kill -9``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from caa_bake.core.atomic import atomic_dir, atomic_file
from caa_bake.core.stale import claim_temp, sweep_stale

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")

ROOT = Path(__file__).resolve().parents[2]

#: a writer: enters atomic_dir / atomic_file, writes, prints its temporary, then waits
_WRITER = """
import os, signal, sys, time
from pathlib import Path
from caa_bake.core import atomic
target, kind, when = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if when == "between-renames":  # SIGKILL right after the old target moved aside
    real = os.rename
    def rename(src, dst):
        real(src, dst)
        if str(dst).endswith(".old"):
            die()
    atomic.os.rename = rename
if when == "removing-old":  # SIGKILL once the new target is in place, old one not removed
    atomic._remove = lambda path: die()

ctx = atomic.atomic_dir(target, overwrite=True) if kind == "dir" else atomic.atomic_file(target)
with ctx as tmp:
    if kind == "dir":
        (tmp / "new.bin").write_bytes(b"n" * 5000)
    else:
        tmp.write_bytes(b"n" * 5000)
    if when == "child":  # a child writes on: it inherits the owner lock
        import subprocess
        child = subprocess.Popen(["sleep", "300"], pass_fds=atomic.owner_fds(tmp))
        print(child.pid, flush=True)
        die()
    if when == "inside":
        print(tmp, flush=True)
        time.sleep(300)
"""


class Writer:
    """A running writer subprocess."""

    def __init__(self, target: Path, kind: str, when: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_WRITER), str(target), kind, when],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def line(self) -> str:
        assert self.proc.stdout is not None
        text = self.proc.stdout.readline().strip()
        assert text, self.proc.stderr.read() if self.proc.stderr else ""
        return text

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)

    def wait_killed(self) -> None:
        """Wait for a writer that SIGKILLs itself."""
        self.proc.wait(timeout=60)
        assert self.proc.returncode == -signal.SIGKILL, self.proc.stderr


@pytest.fixture()
def writers() -> Iterator[list[Writer]]:
    started: list[Writer] = []
    yield started
    for writer in started:
        writer.kill()


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _sweep(folder: Path) -> tuple[list[str], list[str]]:
    """Sweep ``folder``; returns (the lines it reported, what is left in it)."""
    lines: list[str] = []
    sweep_stale(folder, notify=lines.append)
    return lines, _names(folder)


def test_a_killed_writers_folder_is_removed_by_the_next_sweep(
    tmp_path: Path, writers: list[Writer]
) -> None:
    writer = Writer(tmp_path / "out", "dir", "inside")
    writers.append(writer)
    tmp = Path(writer.line())
    assert _names(tmp_path) == sorted([tmp.name, tmp.name + ".lock"])
    record = json.loads((tmp_path / (tmp.name + ".lock")).read_text())
    assert record["pid"] == writer.proc.pid and record["target"] == "out"

    lines, left = _sweep(tmp_path)
    assert (lines, left) == ([], sorted([tmp.name, tmp.name + ".lock"])), "writer is alive"
    assert (tmp / "new.bin").read_bytes() == b"n" * 5000

    writer.kill()
    lines, left = _sweep(tmp_path)
    assert left == []
    assert lines == [
        f"removed 1 stale temporary beside {tmp_path} (5.0 kB), "
        f"left by killed runs (pid {writer.proc.pid})"
    ]


def test_a_killed_atomic_file_writer_is_swept(tmp_path: Path, writers: list[Writer]) -> None:
    (tmp_path / "data.bin").write_bytes(b"old")
    writer = Writer(tmp_path / "data.bin", "file", "inside")
    writers.append(writer)
    tmp = Path(writer.line())
    writer.kill()
    assert tmp.is_file()
    lines, left = _sweep(tmp_path)
    assert left == ["data.bin"] and (tmp_path / "data.bin").read_bytes() == b"old"
    assert len(lines) == 1 and "removed 1 stale temporary" in lines[0]


def test_the_next_atomic_write_beside_it_sweeps_and_says_so(
    tmp_path: Path, writers: list[Writer], capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a", "b"):  # both alive at once: b's own sweep must leave a alone
        writers.append(Writer(tmp_path / name, "dir", "inside"))
        writers[-1].line()
    for writer in writers:
        writer.kill()
    assert len(_names(tmp_path)) == 4
    with atomic_file(tmp_path / "c.txt") as tmp:  # any writer in the same folder
        tmp.write_text("c")
    assert _names(tmp_path) == ["c.txt"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"caa-bake: removed 2 stale temporaries beside {tmp_path} (10.0 kB)")


def test_overwrite_killed_between_its_renames_puts_the_old_target_back(
    tmp_path: Path, writers: list[Writer]
) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("previous export")
    writer = Writer(target, "dir", "between-renames")
    writers.append(writer)
    writer.wait_killed()
    assert not target.exists(), "the kill came after the old target moved aside"
    lines, left = _sweep(tmp_path)
    assert left == ["out"]
    assert _names(target) == ["old.txt"]
    assert (target / "old.txt").read_text() == "previous export"
    assert "put back the previous out" in lines[0]


def test_overwrite_killed_while_removing_the_old_target(
    tmp_path: Path, writers: list[Writer]
) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("previous export")
    writer = Writer(target, "dir", "removing-old")
    writers.append(writer)
    writer.wait_killed()
    assert _names(target) == ["new.bin"], "the new target was already in place"
    assert len(_names(tmp_path)) == 3  # out, the old copy, the lock
    lines, left = _sweep(tmp_path)
    assert left == ["out"] and _names(target) == ["new.bin"]
    assert "removed 1 stale temporary" in lines[0]


def test_a_child_holding_the_lock_keeps_the_folder_alive(
    tmp_path: Path, writers: list[Writer]
) -> None:
    writer = Writer(tmp_path / "out", "dir", "child")
    writers.append(writer)
    child = int(writer.line())
    writer.wait_killed()
    try:
        lines, left = _sweep(tmp_path)
        assert lines == [] and len(left) == 2, "the child still writes there"
    finally:
        os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 30  # the orphaned child is reaped by init, not by us
    while (result := _sweep(tmp_path))[1] and time.monotonic() < deadline:
        time.sleep(0.1)
    lines, left = result
    assert left == [] and len(lines) == 1


def _fake_lock(folder: Path, name: str, record: dict[str, object]) -> Path:
    """A dead writer's temporary and owner lock, made by hand with a chosen record."""
    temp = folder / f".{name}.tmp-abcd1234"
    temp.mkdir()
    (temp / "w.bin").write_bytes(b"x" * 100)
    (folder / f".{name}.tmp-abcd1234.lock").write_text(json.dumps(record))
    return temp


def test_only_this_machines_dead_writers_are_trusted(tmp_path: Path) -> None:
    boot = Path("/proc/sys/kernel/random/boot_id")
    if not boot.is_file():
        pytest.skip("needs /proc boot_id")
    host = socket.gethostname()
    _fake_lock(tmp_path, "other-host", {"pid": 1, "boot_id": "b-other", "host": host + "-x"})
    _fake_lock(tmp_path, "rebooted", {"pid": 77, "boot_id": "b-other", "host": host})
    lines, left = _sweep(tmp_path)
    assert left == [".other-host.tmp-abcd1234", ".other-host.tmp-abcd1234.lock"]
    assert lines == [
        f"removed 1 stale temporary beside {tmp_path} (100 B), "
        "left by killed runs (pid 77 before a reboot)"
    ]


def test_a_live_pid_with_the_same_start_is_never_swept(tmp_path: Path) -> None:
    """Even where flock would silently do nothing, a recorded live process is respected."""
    owned = claim_temp(tmp_path / "me", directory=True)
    try:
        record = json.loads(owned.lock.read_text()) if owned.lock else {}
        owned.release()  # drop our flock, keep the folder: only the pid check protects it
        _fake_lock(tmp_path, "mine", record)
        lines, left = _sweep(tmp_path)
        assert lines == [] and ".mine.tmp-abcd1234" in left
    finally:
        owned.release()


def test_leftovers_without_an_owner_lock_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / ".out.tmp-legacy99").mkdir()
    (tmp_path / ".out.old-1234").mkdir()
    (tmp_path / "out.tmp-x.lock").write_text("{}")  # not hidden: not a caa-bake temporary
    lines, left = _sweep(tmp_path)
    assert lines == [] and len(left) == 3
    assert sweep_stale(tmp_path / "missing").removed == []


def test_writes_leave_nothing_but_their_target(tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "d") as tmp:
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([tmp.name, tmp.name + ".lock"])
        (tmp / "x").write_text("1")
    with atomic_file(tmp_path / "f") as tmp:
        tmp.write_text("2")
    assert _names(tmp_path) == ["d", "f"]
