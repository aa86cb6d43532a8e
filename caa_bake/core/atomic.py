"""Write outputs so they appear whole or not at all.

Everything is written into a hidden temporary folder (or file) beside the target, flushed
to disk, then renamed into place. A crash leaves only the hidden temporary, never a
half-written target, and the next write beside the same target removes that temporary once
it can prove its writer dead (an owner lock the kernel released: :mod:`caa_bake.core.stale`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from caa_bake.core.stale import OLD_SUFFIX, claim_temp, owner_fds, sweep_stale

__all__ = ["atomic_dir", "atomic_file", "default_mode", "fsync_tree", "owner_fds", "scratch_dir"]


def default_mode(*, directory: bool = False) -> int:
    """Permission bits a new file (or folder) gets under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def _remove(path: Path) -> None:
    """Remove a folder tree, or a file or symlink, ignoring errors."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (and ``root`` itself)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


@contextlib.contextmanager
def scratch_dir(target: Path) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``target`` (same filesystem); always removed.

    For writers that move files into ``target`` themselves. Dead writers' temporaries beside
    ``target`` are swept first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target.parent)
    owned = claim_temp(target, directory=True)
    try:
        yield owned.path
    finally:
        shutil.rmtree(owned.path, ignore_errors=True)
        owned.release()


@contextlib.contextmanager
def atomic_dir(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success rename it to ``target``.

    On any exception the temporary folder is removed and ``target`` is untouched. With
    ``overwrite`` an existing ``target`` is replaced only after the new one is complete.
    Dead writers' temporaries beside ``target`` are swept first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target.parent)
    owned = claim_temp(target, directory=True)
    tmp = owned.path
    old = tmp.with_name(tmp.name + OLD_SUFFIX)
    try:
        tmp.chmod(default_mode(directory=True))  # made owner-only, like mkdtemp
        yield tmp
        fsync_tree(tmp)
        if target.exists():
            if not overwrite:
                raise FileExistsError(target)
            # a kill between these renames leaves the old target here; a sweep puts it back
            os.rename(target, old)
            os.rename(tmp, target)
            _remove(old)
        else:
            os.rename(tmp, target)
        _fsync_path(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.lexists(old) and not os.path.lexists(target):
            os.rename(old, target)  # the second rename failed: put the old target back
        raise
    finally:
        owned.release()


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``target``; on success rename it over ``target``.

    Dead writers' temporaries beside ``target`` are swept first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target.parent)
    owned = claim_temp(target, directory=False)
    tmp = owned.path
    try:
        yield tmp
        if tmp.exists():
            tmp.chmod(default_mode())  # made owner-only, like mkstemp
        _fsync_path(tmp)
        os.replace(tmp, target)
        _fsync_path(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        owned.release()
