"""Tables, CSV and markdown of eval and sweep results, from hand-made rows."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from caa_bake.evaluation.tables import (
    PAPER_LLAMA2_7B,
    Row,
    SweepPoint,
    best_layers,
    eval_markdown,
    eval_tables,
    finetuning_table,
    paper_comparison,
    sweep_markdown,
    write_csv,
)


def _row(
    state: str, kind: str, behavior: str, mult: float, task: str, metric: str, value: float
) -> Row:
    return Row(state, kind, behavior, 13 if mult else None, mult, task, metric, value, None, 50)


ROWS = [
    _row("none", "base", "", 0.0, "caa_ab_refusal", "p_match", 0.5),
    _row("none", "base", "", 0.0, "caa_ab_sycophancy", "p_match", 0.6),
    _row("none", "base", "", 0.0, "caa_mmlu", "p_correct_cat", 0.4),
    _row("none", "baked", "refusal", -1.0, "caa_ab_refusal", "p_match", 0.25),
    _row("none", "baked", "refusal", 1.0, "caa_ab_refusal", "p_match", 0.75),
    _row("none", "baked", "refusal", 1.0, "caa_mmlu", "p_correct_cat", 0.375),
    _row("none", "hooks", "refusal", 1.0, "caa_ab_refusal", "p_match", 0.7),
    _row("none", "baked", "sycophancy", 1.0, "caa_ab_sycophancy", "p_match", 0.9),
    _row("ft-pos", "finetuned", "refusal", 0.0, "caa_ab_refusal", "p_match", 0.8),
    _row("ft-pos", "combined", "refusal", 1.0, "caa_ab_refusal", "p_match", 0.95),
]
BEHAVIORS = ["refusal", "sycophancy"]
MULTS = [-1.0, 0.0, 1.0]


def test_eval_tables_cells() -> None:
    tables = {t.title: t for t in eval_tables(ROWS, BEHAVIORS, MULTS)}
    baked = next(t for title, t in tables.items() if title.startswith("p_match — baked"))
    assert baked.columns == ["-1", "0", "+1"]
    assert baked.cells == [[0.25, 0.5, 0.75], [None, 0.6, 0.9]]  # column 0 = the base model
    hooks = next(t for title, t in tables.items() if title.startswith("p_match — hook"))
    assert hooks.cells == [[None, 0.5, 0.7], [None, 0.6, None]]
    combined = next(t for title, t in tables.items() if "[finetuned: ft-pos]" in title)
    assert combined.rows == ["refusal"]  # only behaviors with a finetuned model
    assert combined.cells == [[None, 0.8, 0.95]]  # 0 = the finetuned model
    mmlu = next(t for title, t in tables.items() if title.startswith("MMLU p(correct), mean"))
    assert mmlu.row_header == "vector"
    assert mmlu.cells == [[None, 0.4, 0.375], [None, 0.4, None]]
    assert not any("item mean" in title for title in tables)  # no such rows: no table


def test_eval_markdown_lines() -> None:
    meta = {
        "model": {"model_id": "m", "weights_fingerprint": "ab" * 32, "prompt_style": "plain"},
        "layer": 13,
        "command": "caa-bake eval -b refusal",
        "limit": None,
        "wall_s": 12.0,
        "vectors": {"refusal": {"sha256": "cd" * 32, "norm": 1.5}},
    }
    text = eval_markdown(ROWS, BEHAVIORS, MULTS, meta)
    lines = text.splitlines()
    assert lines[0] == "# caa-bake eval: m, layer 13"
    assert "- vector refusal: sha256 `cdcdcdcdcdcdcdcd`, norm 1.5" in lines
    assert "| refusal | 0.250 | 0.500 | 0.750 |" in lines
    assert "| sycophancy | - | 0.600 | 0.900 |" in lines
    summary = [line for line in lines if line.startswith("Over ")]
    assert summary == [
        "Over 1 (behavior, multiplier, task) cells: mean |Δ| = 0.0500, max |Δ| = 0.0500 "
        "(refusal m+1 caa_ab_refusal p_match: baked 0.7500, hooks 0.7000)."
    ]


def test_merged_format_note_under_nonsense_tables() -> None:
    rows = [*ROWS, _row("none", "baked", "refusal", 1.0, "caa_ab_refusal", "nonsense", 0.99)]
    note = "*Not the model's A/B mass:*"
    merged = eval_markdown(rows, BEHAVIORS, MULTS, {"model": {"answer_format": "merged"}})
    lines = merged.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("### nonsense"))
    after = [line for line in lines[at + 1 :] if line and not line.startswith("|")]
    assert after[0].startswith(note)  # right under the table
    assert merged.count(note) == 1
    split = eval_markdown(rows, BEHAVIORS, MULTS, {"model": {"answer_format": "split"}})
    assert "### nonsense" in split and note not in split
    divided = {"model": {"answer_format": "merged", "scored_at_answer_position": True}}
    assert note not in eval_markdown(rows, BEHAVIORS, MULTS, divided)


def test_csv_round_trip(tmp_path: Path) -> None:
    path = write_csv(ROWS, tmp_path / "rows.csv")
    with path.open(encoding="utf-8") as fh:
        read = list(csv.DictReader(fh))
    assert len(read) == len(ROWS)
    assert read[3] == {
        "state": "none",
        "kind": "baked",
        "behavior": "refusal",
        "layer": "13",
        "multiplier": "-1.0",
        "task": "caa_ab_refusal",
        "metric": "p_match",
        "value": "0.25",
        "stderr": "",
        "n": "50",
        "dtype": "float32",
    }


def _points() -> list[SweepPoint]:
    deltas = {
        ("a", 0, -1.0): -0.1,
        ("a", 0, 1.0): 0.1,  # effect 0.2
        ("a", 1, -1.0): -0.3,
        ("a", 1, 1.0): 0.2,  # effect 0.5
        ("b", 0, -1.0): -0.4,
        ("b", 0, 1.0): 0.3,  # effect 0.7
        ("b", 1, -1.0): 0.0,
        ("b", 1, 1.0): 0.1,  # effect 0.1
    }
    return [SweepPoint(b, layer, m, 0.5 + d, d, 0.0, 50) for (b, layer, m), d in deltas.items()]


def test_best_layers() -> None:
    # all: layer 0 -> 0.2 + 0.7 = 0.9, layer 1 -> 0.5 + 0.1 = 0.6
    assert best_layers(_points()) == {"a": 1, "b": 0, "all": 0}
    tie = [SweepPoint("a", layer, 1.0, 0.6, 0.1, 0.0, 5) for layer in (4, 2)]
    assert best_layers(tie) == {"a": 2, "all": 2}


def test_sweep_markdown() -> None:
    text = sweep_markdown(_points(), {"a": 0.5, "b": 0.5}, {"model": {"model_id": "m"}})
    lines = text.splitlines()
    assert (
        "- best layer (largest Σ sign(m)·Δp_match): a 1, b 0; all behaviors together: **0**"
        in lines
    )
    assert "| layer | a -1 | a +1 | b -1 | b +1 |" in lines
    assert "| 1 | -0.300 | +0.200 | +0.000 | +0.100 |" in lines


def test_paper_comparison_table() -> None:
    table = paper_comparison(ROWS, BEHAVIORS)
    assert table.columns[:3] == ["this run -1", "this run 0", "this run +1"]
    assert table.cells[0] == [0.25, 0.5, 0.75, 0.42, 0.74, 0.89]
    assert table.cells[1] == [None, 0.6, 0.9, 0.54, 0.69, 0.62]
    text = eval_markdown(ROWS, BEHAVIORS, MULTS, {})
    assert "| refusal | 0.250 | 0.500 | 0.750 | 0.420 | 0.740 | 0.890 |" in text.splitlines()


def test_paper_reference_numbers() -> None:
    assert len(PAPER_LLAMA2_7B) == 7
    assert PAPER_LLAMA2_7B["refusal"] == (0.42, 0.74, 0.89)
    assert PAPER_LLAMA2_7B["sycophancy"] == pytest.approx((0.54, 0.69, 0.62))


def test_finetuning_table_has_the_papers_shape() -> None:
    table = finetuning_table(ROWS, MULTS)
    assert table is not None
    assert table.rows == ["refusal · no finetuning", "refusal · ft-pos"]
    assert table.cells == [[0.25, 0.5, 0.75], [None, 0.8, 0.95]]
    assert finetuning_table([r for r in ROWS if r.state == "none"], MULTS) is None
    text = eval_markdown(ROWS, BEHAVIORS, MULTS, {})
    assert "| refusal · ft-pos | - | 0.800 | 0.950 |" in text


def test_no_paper_comparison_without_behavior_tasks() -> None:
    capability = [r for r in ROWS if r.task == "caa_mmlu"]
    assert "side by side with the paper" not in eval_markdown(capability, BEHAVIORS, MULTS, {})
    assert "side by side with the paper" in eval_markdown(ROWS, BEHAVIORS, MULTS, {})
