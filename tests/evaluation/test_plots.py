"""The eval and sweep plots are written as PNG files, one per figure the results call for."""

from __future__ import annotations

from pathlib import Path

from caa_bake.evaluation.plots import plot_eval, plot_sweep
from caa_bake.evaluation.tables import Row, SweepPoint

PNG = b"\x89PNG\r\n\x1a\n"
BEHAVIORS = ["refusal", "sycophancy"]
MULTS = [-1.0, 0.0, 1.0]


def _row(kind: str, behavior: str, mult: float, task: str, metric: str, value: float) -> Row:
    return Row("none", kind, behavior, 13 if mult else None, mult, task, metric, value, None, 50)


ROWS = [
    _row("base", "", 0.0, "caa_ab_refusal", "p_match", 0.5),
    _row("base", "", 0.0, "caa_mmlu", "p_correct_cat", 0.4),
    _row("baked", "refusal", -1.0, "caa_ab_refusal", "p_match", 0.25),
    _row("baked", "refusal", 1.0, "caa_ab_refusal", "p_match", 0.75),
    _row("baked", "refusal", 1.0, "caa_mmlu", "p_correct_cat", 0.375),
    _row("hooks", "refusal", 1.0, "caa_ab_refusal", "p_match", 0.7),
]


def test_plots_are_pngs(tmp_path: Path) -> None:
    files = plot_eval(ROWS, tmp_path, BEHAVIORS, MULTS)
    assert [f.name for f in files] == ["p_match.png", "mmlu.png"]
    points = [SweepPoint("refusal", layer, 1.0, 0.6, 0.1 * layer, 0.0, 5) for layer in range(3)]
    files.append(plot_sweep(points, tmp_path / "sweep.png"))
    for path in files:
        assert path.read_bytes()[:8] == PNG


def test_no_behavior_task_no_p_match_figure(tmp_path: Path) -> None:
    capability = [r for r in ROWS if r.task == "caa_mmlu"]
    files = plot_eval(capability, tmp_path, BEHAVIORS, MULTS)
    assert [f.name for f in files] == ["mmlu.png"]
