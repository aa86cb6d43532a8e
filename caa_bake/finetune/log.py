"""Per-rank training logs and the run summary built from them.

Every rank writes ``caa_bake_training/rank<r>.json`` into the checkpoint: the dataset
indices and loss of each of its steps, its timings and the sha256 of its final weights.
:func:`summarize` checks that the ranks agree (same number of steps, same final weights,
no item seen by two ranks in one step) and reduces the logs to the numbers recorded in
the provenance block.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from caa_bake.core import CaaBakeError

__all__ = ["LOG_DIR", "RankLog", "StepRecord", "TrainingSummary", "read_rank_logs", "summarize"]

#: folder of the per-rank logs inside a finetuned checkpoint
LOG_DIR = "caa_bake_training"


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step of one rank: the dataset items it used and its loss."""

    step: int
    indices: list[int]
    loss: float


@dataclass
class RankLog:
    """What one rank did."""

    rank: int
    world_size: int
    device: str
    threads: int
    steps: list[StepRecord] = field(default_factory=list)
    init_seconds: float = 0.0
    train_seconds: float = 0.0
    save_seconds: float = 0.0
    weights_sha256: str = ""
    saved_sha256: str | None = None

    @property
    def samples(self) -> int:
        """Training samples this rank processed."""
        return sum(len(s.indices) for s in self.steps)

    def path_in(self, checkpoint: Path) -> Path:
        """Where this log lives inside a checkpoint folder."""
        return Path(checkpoint) / LOG_DIR / f"rank{self.rank}.json"

    def write(self, checkpoint: Path) -> Path:
        """Write the log into ``checkpoint/caa_bake_training/``; returns the file."""
        path = self.path_in(checkpoint)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self)) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> RankLog:
        """Parse a file written by :meth:`write`."""
        raw: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
        steps = [StepRecord(**s) for s in raw.pop("steps")]
        return cls(**raw, steps=steps)


def read_rank_logs(checkpoint: Path, world_size: int) -> list[RankLog]:
    """The logs of ranks ``0 .. world_size-1`` in a checkpoint folder."""
    logs = []
    for rank in range(world_size):
        path = Path(checkpoint) / LOG_DIR / f"rank{rank}.json"
        if not path.is_file():
            raise CaaBakeError(f"rank {rank} wrote no training log ({path.name})")
        logs.append(RankLog.read(path))
    return logs


@dataclass(frozen=True)
class TrainingSummary:
    """The run in numbers (``losses[s]`` = mean over ranks of step ``s``'s loss).

    ``weights_sha256``: the trained state (identical on every rank; with LoRA it includes the
    unmerged adapter). ``saved_sha256``: the saved checkpoint's state dict (rank 0).
    """

    steps: int
    samples: int
    losses: list[float]
    train_seconds: float
    init_seconds: float
    samples_per_second: float
    weights_sha256: str
    saved_sha256: str | None

    def record(self) -> dict[str, Any]:
        """The ``training`` entry of the provenance block."""
        k = max(1, min(10, self.steps // 4))
        return {
            "steps": self.steps,
            "samples": self.samples,
            "first_loss": self.losses[0],
            "final_loss": self.losses[-1],
            f"mean_loss_first_{k}_steps": sum(self.losses[:k]) / k,
            f"mean_loss_last_{k}_steps": sum(self.losses[-k:]) / k,
            "init_seconds": round(self.init_seconds, 3),
            "train_seconds": round(self.train_seconds, 3),
            "samples_per_second": round(self.samples_per_second, 4),
            "weights_sha256": self.weights_sha256,
            "saved_weights_sha256": self.saved_sha256,
            "per_rank_logs": f"{LOG_DIR}/rank<r>.json",
        }


def summarize(logs: Sequence[RankLog]) -> TrainingSummary:
    """Check that the ranks agree and reduce their logs.

    Raises CaaBakeError when the ranks ran different numbers of steps, shared an item in a
    step, or ended with different weights (a broken data-parallel setup).
    """
    if not logs:
        raise CaaBakeError("no rank logs to summarize")
    n_steps = {len(log.steps) for log in logs}
    if len(n_steps) != 1:
        raise CaaBakeError(f"the ranks ran different numbers of steps: {sorted(n_steps)}")
    steps = n_steps.pop()
    if steps == 0:
        raise CaaBakeError("training ran no step")
    for s in range(steps):
        seen = [i for log in logs for i in log.steps[s].indices]
        if len(seen) != len(set(seen)):
            raise CaaBakeError(f"step {s}: two ranks trained on the same item")
    hashes = {log.weights_sha256 for log in logs}
    if len(hashes) != 1:
        raise CaaBakeError("the ranks ended with different weights (data parallelism is broken)")
    losses = [sum(log.steps[s].loss for log in logs) / len(logs) for s in range(steps)]
    samples = sum(log.samples for log in logs)
    seconds = max(log.train_seconds for log in logs)
    return TrainingSummary(
        steps=steps,
        samples=samples,
        losses=losses,
        train_seconds=seconds,
        init_seconds=max(log.init_seconds for log in logs),
        samples_per_second=samples / seconds if seconds > 0 else 0.0,
        weights_sha256=hashes.pop(),
        saved_sha256=logs[0].saved_sha256,
    )
