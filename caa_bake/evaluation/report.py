"""Result files of ``caa-bake eval`` and ``caa-bake sweep``: JSON, CSV, markdown, PNG plots.

The tables come from :mod:`caa_bake.evaluation.tables`, the plots from
:mod:`caa_bake.evaluation.plots`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from caa_bake.evaluation.plots import plot_eval, plot_sweep
from caa_bake.evaluation.tables import (
    Row,
    SweepPoint,
    best_layers,
    eval_markdown,
    sweep_markdown,
    write_csv,
)

__all__ = ["write_eval_report", "write_sweep_report"]


def _write_json(path: Path, payload: Any) -> Path:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def write_eval_report(
    folder: Path,
    *,
    meta: dict[str, Any],
    variants: list[dict[str, Any]],
    rows: list[Row],
    samples: list[dict[str, Any]],
    behaviors: Sequence[str],
    multipliers: Sequence[float],
) -> list[Path]:
    """``results.json``, ``results.csv``, ``samples.jsonl``, ``results.md`` and the plots."""
    files = [
        _write_json(folder / "results.json", {**meta, "variants": variants}),
        write_csv(rows, folder / "results.csv"),
        _write_jsonl(folder / "samples.jsonl", samples),
    ]
    md = folder / "results.md"
    md.write_text(eval_markdown(rows, behaviors, multipliers, meta) + "\n", encoding="utf-8")
    files.append(md)
    return files + plot_eval(rows, folder, behaviors, multipliers)


def write_sweep_report(
    folder: Path,
    *,
    meta: dict[str, Any],
    points: list[SweepPoint],
    base: dict[str, float],
) -> list[Path]:
    """``sweep.json``, ``sweep.csv``, ``sweep.md`` and ``sweep.png``."""
    payload = {
        **meta,
        "unsteered_p_match": base,
        "best_layer": best_layers(points),
        "points": [asdict(p) for p in points],
    }
    files = [_write_json(folder / "sweep.json", payload), write_csv(points, folder / "sweep.csv")]
    md = folder / "sweep.md"
    md.write_text(sweep_markdown(points, base, meta), encoding="utf-8")
    files.append(md)
    files.append(plot_sweep(points, folder / "sweep.png"))
    return files
