"""``caa_bake.finetune.log``: per-rank logs on disk and the run summary built from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caa_bake.core.errors import CaaBakeError
from caa_bake.finetune.log import (
    LOG_DIR,
    RankLog,
    StepRecord,
    read_rank_logs,
    summarize,
)


def _log(
    rank: int,
    batches: list[list[int]],
    losses: list[float] | None = None,
    *,
    sha: str = "w",
    train: float = 4.0,
    init: float = 1.0,
) -> RankLog:
    losses = losses if losses is not None else [1.0] * len(batches)
    steps = [
        StepRecord(s, idx, loss) for s, (idx, loss) in enumerate(zip(batches, losses, strict=True))
    ]
    return RankLog(
        rank, 2, "cpu", 1, steps, init_seconds=init, train_seconds=train, weights_sha256=sha
    )


def test_samples_and_path() -> None:
    log = _log(1, [[0, 1], [2, 3], [4]])
    assert log.samples == 5
    assert log.path_in(Path("/ck")) == Path("/ck") / LOG_DIR / "rank1.json"


def test_write_creates_the_folder_and_round_trips(tmp_path: Path) -> None:
    log = _log(0, [[3, 9], [1, 4]], [2.5, 0.75])
    log.saved_sha256 = "s"
    path = log.write(tmp_path / "checkpoint")
    assert path == tmp_path / "checkpoint" / "caa_bake_training" / "rank0.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["steps"][1] == {"step": 1, "indices": [1, 4], "loss": 0.75}
    back = RankLog.read(path)
    assert back == log
    assert all(isinstance(s, StepRecord) for s in back.steps)


def test_read_rank_logs_in_rank_order(tmp_path: Path) -> None:
    for rank in (1, 0):
        _log(rank, [[rank]]).write(tmp_path)
    assert [log.rank for log in read_rank_logs(tmp_path, 2)] == [0, 1]


def test_a_missing_rank_log_is_named(tmp_path: Path) -> None:
    _log(0, [[0]]).write(tmp_path)
    with pytest.raises(CaaBakeError, match=r"^rank 1 wrote no training log \(rank1.json\)$"):
        read_rank_logs(tmp_path, 2)


def test_summary_averages_over_ranks() -> None:
    a = _log(0, [[0, 1], [4, 5]], [2.0, 1.0], train=4.0, init=1.5)
    b = _log(1, [[2, 3], [6, 7]], [4.0, 0.0], train=5.0, init=0.5)
    a.saved_sha256 = "saved"
    summary = summarize([a, b])
    assert summary.steps == 2
    assert summary.samples == 8
    assert summary.losses == [3.0, 0.5]
    assert summary.train_seconds == 5.0  # the slowest rank
    assert summary.init_seconds == 1.5
    assert summary.samples_per_second == 8 / 5.0
    assert summary.weights_sha256 == "w"
    assert summary.saved_sha256 == "saved"  # rank 0's


def test_zero_train_time_gives_zero_rate() -> None:
    assert summarize([_log(0, [[0]], train=0.0)]).samples_per_second == 0.0


@pytest.mark.parametrize(("steps", "k"), [(1, 1), (4, 1), (8, 2), (40, 10), (400, 10)])
def test_record_averages_the_first_and_last_k_steps(steps: int, k: int) -> None:
    losses = [float(s) for s in range(steps)]
    record = summarize([_log(0, [[s] for s in range(steps)], losses)]).record()
    assert record["steps"] == steps
    assert record["first_loss"] == 0.0
    assert record["final_loss"] == steps - 1
    assert record[f"mean_loss_first_{k}_steps"] == sum(losses[:k]) / k
    assert record[f"mean_loss_last_{k}_steps"] == sum(losses[-k:]) / k
    assert record["per_rank_logs"] == "caa_bake_training/rank<r>.json"
    assert len([key for key in record if key.startswith("mean_loss_")]) == 2


def test_record_rounds_timings() -> None:
    record = summarize([_log(0, [[0], [1], [2]], train=3.14159265, init=0.123456)]).record()
    assert record["train_seconds"] == 3.142
    assert record["init_seconds"] == 0.123
    assert record["samples_per_second"] == round(3 / 3.14159265, 4)


@pytest.mark.parametrize(
    ("logs", "message"),
    [
        (lambda: [], "no rank logs to summarize"),
        (lambda: [_log(0, []), _log(1, [])], "training ran no step"),
        (lambda: [_log(0, [[0], [2]]), _log(1, [[1]])], r"different numbers of steps: \[1, 2\]"),
        (lambda: [_log(0, [[0], [2]]), _log(1, [[1], [2]])], "step 1: two ranks trained on"),
        (lambda: [_log(0, [[0]], sha="a"), _log(1, [[1]], sha="b")], "different weights"),
    ],
)
def test_ranks_that_disagree_are_refused(logs: object, message: str) -> None:
    with pytest.raises(CaaBakeError, match=message):
        summarize(logs())  # type: ignore[operator]
