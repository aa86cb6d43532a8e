"""Start the ranks of a finetuning run as subprocesses and wait for them.

Each rank is ``python -m caa_bake.finetune.worker`` with the usual torch.distributed
environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1`` and a free
``MASTER_PORT``), plus the launcher's pid so a rank dies with it. CPU ranks get
``DS_ACCELERATOR=cpu``, no visible GPU and their share of the CPU threads. Output of rank
``r`` goes to ``<workdir>/rank<r>.log``. When one rank fails the others are stopped, and the
error is reported as one line (a rank's own error message if one wrote it, else the last
exception line of the failed rank's log and the log's path).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from caa_bake.core import CaaBakeError, is_quiet, owner_fds
from caa_bake.finetune.spec import FinetuneSpec
from caa_bake.finetune.worker import ERROR_FILE, LAUNCHER_PID_ENV, PROGRESS_FILE

__all__ = ["RankCrashed", "free_port", "launch_ranks", "rank_env"]

_POLL_SECONDS = 0.5
_STOP_SECONDS = 10.0


class RankCrashed(CaaBakeError):
    """A rank died without a user-facing message; its log (named in the message) is kept."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rank_env(spec: FinetuneSpec, rank: int, port: int) -> dict[str, str]:
    """The environment of rank ``rank``."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(spec.world_size),
        LOCAL_WORLD_SIZE=str(spec.world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        PYTHONUNBUFFERED="1",
        **{LAUNCHER_PID_ENV: str(os.getpid())},
        PYTHONPATH=os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p),
    )
    if spec.device == "cpu":
        env.update(
            DS_ACCELERATOR="cpu",
            CUDA_VISIBLE_DEVICES="",
            OMP_NUM_THREADS=str(spec.threads_per_rank),
        )
    return env


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Terminate the still-running ranks (these processes only), then kill stragglers."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + _STOP_SECONDS
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_RANK_PREFIX = re.compile(r"^\[rank\d+\]:\s*")
_EXCEPTION = re.compile(r"^[\w.]*(Error|Exception|Interrupt)\b")


def _telling_line(path: Path) -> str:
    """The last exception line of a rank's log (``XyzError: ...``), else its last line."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [_RANK_PREFIX.sub("", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    errors = [ln for ln in lines if _EXCEPTION.match(ln)]
    return errors[-1] if errors else (lines[-1] if lines else "")


def _failure(workdir: Path, world_size: int, rank: int, code: int) -> CaaBakeError:
    """The error of the run: a rank's own message if any rank wrote one, else ``rank``'s log."""
    for other in range(world_size):
        error_file = workdir / ERROR_FILE.format(rank=other)
        if error_file.is_file():
            return CaaBakeError(error_file.read_text(encoding="utf-8").strip())
    log = workdir / f"rank{rank}.log"
    last = _telling_line(log)
    detail = f": {last}" if last else ""
    return RankCrashed(f"rank {rank} failed (exit code {code}){detail} (full log: {log})")


class _Progress:
    """A tqdm bar fed from rank 0's progress file."""

    def __init__(self, path: Path) -> None:
        from tqdm.auto import tqdm

        self._path = path
        self._bar = tqdm(desc="finetune", unit="step", disable=is_quiet(), leave=False)
        self._done = 0

    def poll(self) -> None:
        try:
            step, total, loss = self._path.read_text(encoding="utf-8").split()
        except (OSError, ValueError):
            return
        self._bar.total = int(total)
        self._bar.update(int(step) - self._done)
        self._done = int(step)
        self._bar.set_postfix(loss=loss, refresh=False)

    def close(self) -> None:
        self._bar.close()


def launch_ranks(spec: FinetuneSpec, workdir: Path, checkpoint: Path) -> None:
    """Run all ranks of ``spec`` (job files in ``workdir``) and wait until they finish.

    Raises:
        CaaBakeError: a rank failed; the others were stopped.
    """
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "caa_bake.finetune.worker",
        "--workdir",
        str(workdir),
        "--checkpoint",
        str(checkpoint),
    ]
    procs: list[subprocess.Popen[bytes]] = []
    progress = _Progress(workdir / PROGRESS_FILE)
    try:
        for rank in range(spec.world_size):
            with (workdir / f"rank{rank}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        command,
                        env=rank_env(spec, rank, port),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        pass_fds=owner_fds(checkpoint),  # its temporary lives while ranks do
                    )
                )
        while True:
            progress.poll()
            codes = [proc.poll() for proc in procs]
            failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                _stop(procs)
                raise _failure(workdir, spec.world_size, *failed[0])
            if all(code == 0 for code in codes):
                return
            time.sleep(_POLL_SECONDS)
    finally:
        _stop(procs)
        progress.close()
