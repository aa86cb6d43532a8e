"""Temporaries that outlive their writer: owner locks, and the sweeper that removes them.

Every hidden temporary that :mod:`caa_bake.core.atomic` makes beside a target
(``.<name>.tmp-XXXXXXXX``, a folder or a file) has an *owner lock* beside it,
``.<name>.tmp-XXXXXXXX.lock``. The writer creates the lock first, holds an exclusive
``fcntl.flock`` on it for its whole life, and records who it is in it (pid, boot id, host,
target). The lock is removed only after the temporary is gone (renamed into place or
deleted), so a temporary never exists without its lock except after its writer died.

The kernel drops a process's flocks when it dies, whatever the cause (``kill -9``, an
out-of-memory kill, power loss). So :func:`sweep_stale` proves a temporary dead by taking
its lock without waiting: if it gets the lock, nobody writes there any more and the
temporary is removed; if not, a live process still writes it and it is left alone.
Children that must keep a temporary alive inherit the lock (``pass_fds=owner_fds(tmp)``).

Network filesystems: flock works across hosts on NFSv4 (Linux emulates it with byte-range
locks the server keeps), but a mount with local-only locks (``local_lock=flock``/``all``,
NFSv3 ``nolock``) would let a sweeper on another host take a lock a live writer holds. The
sweeper therefore only trusts a lock taken by a writer on the same host or the same boot
(kernel); another machine's temporaries are left for that machine to sweep.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no flock; temporaries get no lock and are never swept
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_SUFFIX",
    "OLD_SUFFIX",
    "OwnedTemp",
    "SweepReport",
    "claim_temp",
    "owner_fds",
    "sweep_stale",
]

LOCK_SUFFIX = ".lock"
#: the previous target while an overwrite swaps the new one in (``<temporary>.old``)
OLD_SUFFIX = ".old"
_TEMP_MARK = ".tmp-"
#: ``.<target name>.tmp-<mkstemp letters>.lock``
_LOCK_NAME = re.compile(r"^\.(?P<target>.+)\.tmp-[a-z0-9_]+\.lock$")
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_CLAIM_TRIES = 100
#: temporaries this process writes -> their owner lock's descriptor
_HELD: dict[Path, int] = {}


def _boot_id() -> str | None:
    try:
        return _BOOT_ID.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def _owner_record(target: Path) -> dict[str, Any]:
    pid = os.getpid()
    return {
        "writer": "caa-bake",
        "pid": pid,
        "process_start": _process_start(pid),
        "boot_id": _boot_id(),
        "host": socket.gethostname(),
        "target": target.name,
    }


@dataclass
class OwnedTemp:
    """A hidden temporary beside a target, and the owner lock this process holds for it."""

    path: Path
    lock: Path | None
    fd: int | None

    def release(self) -> None:
        """Drop the lock (call once the temporary is gone: renamed into place or removed)."""
        _HELD.pop(self.path, None)
        if self.lock is not None:
            self.lock.unlink(missing_ok=True)
        if self.fd is not None:
            os.close(self.fd)
        self.lock = self.fd = None


def owner_fds(path: Path) -> tuple[int, ...]:
    """Descriptors a child process must inherit to keep the temporary ``path`` alive.

    Pass them as ``subprocess.Popen(..., pass_fds=owner_fds(tmp))`` when children write
    into ``tmp``: the lock then stays held until the last of them exits, so a sweeper
    leaves ``tmp`` alone even if this process is killed first. Empty when ``path`` is not a
    temporary this process writes (or there is no flock).
    """
    fd = _HELD.get(Path(path))
    return () if fd is None else (fd,)


def _make(path: Path, *, directory: bool) -> None:
    if directory:
        path.mkdir(mode=0o700)
    else:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def claim_temp(target: Path, *, directory: bool) -> OwnedTemp:
    """Create a hidden temporary folder (or empty file) beside ``target``, owned by us.

    The owner lock is created and locked before the temporary exists. Raises ``OSError``
    when the parent folder is not writable.
    """
    target = Path(target)
    prefix = f".{target.name}{_TEMP_MARK}"
    if fcntl is None:
        if directory:
            return OwnedTemp(Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent)), None, None)
        fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(fd)
        return OwnedTemp(Path(name), None, None)
    for _ in range(_CLAIM_TRIES):
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=LOCK_SUFFIX, dir=target.parent)
        lock = Path(name)
        owned = OwnedTemp(lock.with_name(lock.name[: -len(LOCK_SUFFIX)]), lock, fd)
        locked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a sweeper took the fresh lock first; it removes it
            os.close(fd)
            continue
        except OSError:  # no flock on this filesystem: a sweeper cannot take it either
            locked = False
        if locked and not _same_file(fd, lock):  # ... and removed it before we locked it
            os.close(fd)
            continue
        try:
            os.write(fd, (json.dumps(_owner_record(target)) + "\n").encode())
            _make(owned.path, directory=directory)
        except FileExistsError:  # a leftover without a lock has this very name
            owned.release()
            continue
        except BaseException:
            owned.release()
            raise
        _HELD[owned.path] = fd
        return owned
    raise FileExistsError(f"cannot create a temporary beside {target}")


def _same_file(fd: int, path: Path) -> bool:
    """True when ``path`` still names the file open as ``fd`` (not unlinked or replaced)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


# ---- the sweeper ----------------------------------------------------------------------


@dataclass
class SweepReport:
    """What :func:`sweep_stale` did in one folder."""

    folder: Path
    removed: list[Path] = field(default_factory=list)
    restored: list[Path] = field(default_factory=list)
    freed_bytes: int = 0
    writers: list[str] = field(default_factory=list)

    def summary(self) -> str | None:
        """One line for the terminal, or None when nothing was done."""
        if not self.removed and not self.restored:
            return None
        parts = []
        if self.removed:
            n = len(self.removed)
            parts.append(
                f"removed {n} stale temporar{'y' if n == 1 else 'ies'} beside {self.folder} "
                f"({_human(self.freed_bytes)})"
            )
        if self.restored:
            names = ", ".join(p.name for p in self.restored)
            parts.append(f"put back the previous {names} (an overwrite was interrupted)")
        who = ", ".join(dict.fromkeys(self.writers))
        return "; ".join(parts) + (f", left by killed runs ({who})" if who else "")


def _human(size: int) -> str:
    """``512 B``, ``3.4 MB``, ``6.6 GB``."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


def _freed(path: Path) -> int:
    """Bytes that removing ``path`` frees (files hard-linked elsewhere free nothing)."""
    try:
        top = path.lstat()
    except OSError:
        return 0
    if not path.is_dir() or path.is_symlink():
        return top.st_size if top.st_nlink == 1 else 0
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if st.st_nlink == 1:
                total += st.st_size
    return total


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _read_record(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 1 << 16, 0)
        record = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _trusted_dead(record: dict[str, Any]) -> bool:
    """Whether a lock we could take proves its writer dead (see the module notes)."""
    if not record:
        return True  # died between creating the lock and writing it: no temporary yet
    same_boot = record.get("boot_id") is not None and record.get("boot_id") == _boot_id()
    if not same_boot and record.get("host") != socket.gethostname():
        return False  # another machine on a shared filesystem: its locks may not reach us
    pid = record.get("pid")
    if same_boot and isinstance(pid, int) and record.get("process_start") is not None:
        # belt and braces for filesystems whose flock silently does nothing
        return _process_start(pid) != record["process_start"]
    return True


def _writer(record: dict[str, Any]) -> str:
    pid = record.get("pid")
    if not isinstance(pid, int):
        return "unknown writer"
    boot = record.get("boot_id")
    return f"pid {pid}" if boot is None or boot == _boot_id() else f"pid {pid} before a reboot"


def _clear(temp: Path, old: Path, target: Path, report: SweepReport) -> bool:
    """Remove a dead writer's temporary (and put back or remove its old target).

    Returns False when something could not be removed (the lock then stays for a later try).
    """
    try:
        if os.path.lexists(old) and not os.path.lexists(target):
            os.rename(old, target)  # killed between the two renames of an overwrite
            report.restored.append(target)
        for leftover in (temp, old):
            if os.path.lexists(leftover):
                freed = _freed(leftover)
                _remove(leftover)
                if os.path.lexists(leftover):
                    return False
                report.freed_bytes += freed
                report.removed.append(leftover)
    except OSError:
        return False
    return True


def _sweep_one(folder: Path, lock: Path, target_name: str, report: SweepReport) -> None:
    assert fcntl is not None
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # finished meanwhile, or not ours to read
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # held by a live writer (or no flock here: nothing can be proven)
        if not _same_file(fd, lock):
            return  # its writer finished and removed it after we opened it
        record = _read_record(fd)
        if not _trusted_dead(record):
            return
        temp = lock.with_name(lock.name[: -len(LOCK_SUFFIX)])
        if _clear(temp, temp.with_name(temp.name + OLD_SUFFIX), folder / target_name, report):
            report.writers.append(_writer(record))
            with contextlib.suppress(OSError):
                lock.unlink()
    finally:
        os.close(fd)


def sweep_stale(folder: Path, *, notify: Callable[[str], None] | None = None) -> SweepReport:
    """Remove the temporaries in ``folder`` whose writers are dead; leave live ones alone.

    Only caa-bake temporaries with an owner lock are considered. An overwrite killed between
    its two renames gets its previous target put back. ``notify`` gets one line when
    something was removed (default: print it on stderr).
    """
    folder = Path(folder)
    report = SweepReport(folder)
    if fcntl is None:
        return report
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return report
    for name in names:
        match = _LOCK_NAME.match(name)
        if match is not None:
            _sweep_one(folder, folder / name, match["target"], report)
    line = report.summary()
    if line is not None:
        if notify is None:
            print(f"caa-bake: {line}", file=sys.stderr, flush=True)
        else:
            notify(line)
    return report
