"""Mean score per behavior and multiplier, the markdown table and the figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from caa_bake.generation.report import PAPER_TABLE4, Cell, aggregate, render_table, write_report


def _rows() -> list[dict[str, object]]:
    scores = {
        ("refusal", -1.0): [2, 4, None],
        ("refusal", 0.0): [5, 6, 7],
        ("refusal", 1.0): [9, None, None],
        ("myopic-reward", 0.0): [1.5, 2.5],
    }
    return [
        {"behavior": b, "mult": m, "score": s} for (b, m), values in scores.items() for s in values
    ]


def test_aggregate_by_hand() -> None:
    cells = aggregate(_rows())
    assert cells["refusal"][-1.0] == Cell(3.0, 2, 1)
    assert cells["refusal"][0.0] == Cell(6.0, 3, 0)
    assert cells["refusal"][1.0] == Cell(9.0, 1, 2)
    assert cells["myopic-reward"] == {0.0: Cell(2.0, 2, 0)}
    assert aggregate([{"behavior": "x", "mult": 1, "score": None}])["x"][1.0] == Cell(None, 0, 1)


def test_table_is_shaped_like_table_4_with_the_papers_numbers() -> None:
    table = render_table(aggregate(_rows()), "judge-x")
    lines = table.splitlines()
    assert "judge: judge-x" in lines[0]
    assert lines[2] == "| behavior | m=-1 | m=0 | m=+1 | paper m=-1 / 0 / +1 |"
    assert (
        "| refusal | 3.00 (n=2, 1 non-numeric) | 6.00 (n=3) | 9.00 (n=1, 2 non-numeric) | — |"
        in lines
    )
    paper = PAPER_TABLE4["myopic-reward"]
    assert f"| myopic-reward | — | 2.00 (n=2) | — | {paper[-1]:.2f} / 1.65 / 4.38 |" in lines
    assert "Non-numeric replies: 3 of 11." in table


def test_write_report(tmp_path: Path) -> None:
    files, summary = write_report(tmp_path, _rows(), judge="j")
    assert [f.name for f in files] == ["table.md", "scores.png"]
    assert files[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary[0].startswith("| behavior")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.png", "table.md"]


@pytest.mark.parametrize("behavior", sorted(PAPER_TABLE4))
def test_paper_numbers_are_the_ones_in_the_method_notes(behavior: str) -> None:
    # docs/caa-method.md section 4: 7B, layer 13, -1 / 0 / +1
    expected = {"myopic-reward": (0.20, 1.65, 4.38), "corrigible-neutral-HHH": (2.30, 2.82, 4.70)}
    assert tuple(PAPER_TABLE4[behavior][m] for m in (-1.0, 0.0, 1.0)) == expected[behavior]
