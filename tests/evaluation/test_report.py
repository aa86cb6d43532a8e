"""The result files of an eval and a sweep, written from hand-made rows and points."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from caa_bake.evaluation.report import write_eval_report, write_sweep_report
from caa_bake.evaluation.tables import Row, SweepPoint, eval_markdown, sweep_markdown

BEHAVIORS = ["refusal"]
MULTS = [-1.0, 0.0, 1.0]
ROWS = [
    Row("none", "base", "", None, 0.0, "caa_ab_refusal", "p_match", 0.5, None, 10),
    Row("none", "baked", "refusal", 13, -1.0, "caa_ab_refusal", "p_match", 0.25, 0.05, 10),
    Row("none", "baked", "refusal", 13, 1.0, "caa_ab_refusal", "p_match", 0.75, 0.05, 10),
]


def test_eval_report_files(tmp_path: Path) -> None:
    meta = {"model": {"model_id": "m"}, "layer": 13, "wall_s": 1.0}
    variants = [{"label": "base"}, {"label": "baked refusal"}]
    samples = [{"task": "caa_ab_refusal", "p_match": 0.5}]
    files = write_eval_report(
        tmp_path,
        meta=meta,
        variants=variants,
        rows=ROWS,
        samples=samples,
        behaviors=BEHAVIORS,
        multipliers=MULTS,
    )
    names = [f.name for f in files]
    assert names == ["results.json", "results.csv", "samples.jsonl", "results.md", "p_match.png"]
    assert json.loads((tmp_path / "results.json").read_text()) == {**meta, "variants": variants}
    with (tmp_path / "results.csv").open(encoding="utf-8") as fh:
        assert [r["value"] for r in csv.DictReader(fh)] == ["0.5", "0.25", "0.75"]
    lines = (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == samples
    md = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert md == eval_markdown(ROWS, BEHAVIORS, MULTS, meta) + "\n"


def test_sweep_report_files(tmp_path: Path) -> None:
    points = [
        SweepPoint("refusal", layer, m, 0.5 + d, d, 0.0, 10)
        for layer, m, d in [(0, -1.0, -0.1), (0, 1.0, 0.1), (1, -1.0, -0.3), (1, 1.0, 0.3)]
    ]
    base = {"refusal": 0.5}
    meta = {"model": {"model_id": "m"}}
    files = write_sweep_report(tmp_path, meta=meta, points=points, base=base)
    assert [f.name for f in files] == ["sweep.json", "sweep.csv", "sweep.md", "sweep.png"]
    payload = json.loads((tmp_path / "sweep.json").read_text(encoding="utf-8"))
    assert payload["best_layer"] == {"refusal": 1, "all": 1}
    assert payload["unsteered_p_match"] == base
    assert len(payload["points"]) == 4
    assert (tmp_path / "sweep.md").read_text(encoding="utf-8") == sweep_markdown(points, base, meta)
