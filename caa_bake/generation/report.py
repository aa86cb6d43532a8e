"""The judge's results: mean score against multiplier per behavior (the paper's Table 4).

``table.md`` has one row per behavior and one column per multiplier: the mean score over the
answers the judge scored, how many it scored, and how many replies were not a score. The
paper's numbers (Llama-2-7B-chat, layer 13, GPT-4 judge) stand beside ours where
``docs/caa-method.md`` records them. ``scores.png`` draws the same means, the paper's dashed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caa_bake.core import atomic_file
from caa_bake.generation.settings import fmt_mult

__all__ = ["PAPER_TABLE4", "Cell", "aggregate", "render_table", "write_report"]

# Llama-2-7B-chat, layer 13, no finetuning, GPT-4 judge, multipliers -1 / 0 / +1
PAPER_TABLE4: dict[str, dict[float, float]] = {
    "myopic-reward": {-1.0: 0.20, 0.0: 1.65, 1.0: 4.38},
    "corrigible-neutral-HHH": {-1.0: 2.30, 0.0: 2.82, 1.0: 4.70},
}
PAPER_LABEL = "Llama-2-7B-chat, layer 13, GPT-4 judge"


@dataclass(frozen=True)
class Cell:
    """The scores of one behavior at one multiplier."""

    mean: float | None
    scored: int
    non_numeric: int


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, dict[float, Cell]]:
    """``{behavior: {mult: Cell}}`` from score rows (``score`` None: not a number)."""
    groups: dict[str, dict[float, list[float | None]]] = {}
    for row in rows:
        by_mult = groups.setdefault(str(row["behavior"]), {})
        by_mult.setdefault(float(row["mult"]), []).append(row.get("score"))
    out: dict[str, dict[float, Cell]] = {}
    for behavior, by_mult in groups.items():
        out[behavior] = {}
        for mult, values in sorted(by_mult.items()):
            numbers = [float(v) for v in values if v is not None]
            mean = sum(numbers) / len(numbers) if numbers else None
            out[behavior][mult] = Cell(mean, len(numbers), len(values) - len(numbers))
    return out


def _cell(cell: Cell | None) -> str:
    if cell is None:
        return "—"
    mean = "—" if cell.mean is None else f"{cell.mean:.2f}"
    bad = f", {cell.non_numeric} non-numeric" if cell.non_numeric else ""
    return f"{mean} (n={cell.scored}{bad})"


def render_table(cells: dict[str, dict[float, Cell]], judge: str) -> str:
    """The markdown table: behaviors down, multipliers across, the paper's beside."""
    mults = sorted({m for by_mult in cells.values() for m in by_mult})
    paper_mults = sorted({m for v in PAPER_TABLE4.values() for m in v})
    head = ["behavior", *(f"m={fmt_mult(m)}" for m in mults)]
    head.append(f"paper m={' / '.join(fmt_mult(m) for m in paper_mults)}")
    lines = [
        f"Mean judge score (0-10) by multiplier; judge: {judge}. "
        "n = replies that were a score; non-numeric replies are counted, not scored.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for behavior in sorted(cells):
        row = [behavior, *(_cell(cells[behavior].get(m)) for m in mults)]
        paper = PAPER_TABLE4.get(behavior)
        row.append(" / ".join(f"{paper[m]:.2f}" for m in paper_mults) if paper else "—")
        lines.append("| " + " | ".join(row) + " |")
    total_bad = sum(c.non_numeric for by_mult in cells.values() for c in by_mult.values())
    total = total_bad + sum(c.scored for by_mult in cells.values() for c in by_mult.values())
    lines += ["", f"Non-numeric replies: {total_bad} of {total}. Paper column: {PAPER_LABEL}."]
    return "\n".join(lines) + "\n"


def _plot(cells: dict[str, dict[float, Cell]], judge: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for index, behavior in enumerate(sorted(cells)):
        color = f"C{index % 10}"
        points = [(m, c.mean) for m, c in sorted(cells[behavior].items()) if c.mean is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, "o-", color=color, label=behavior)
        paper = PAPER_TABLE4.get(behavior)
        if paper:
            xs, ys = zip(*sorted(paper.items()), strict=True)
            ax.plot(xs, ys, "s--", color=color, alpha=0.6, label=f"{behavior} (paper, 7B)")
    ax.set_xlabel("multiplier")
    ax.set_ylabel("mean judge score (0-10)")
    ax.set_ylim(-0.3, 10.3)
    ax.set_title(f"Open-ended answers scored by {judge}", fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    folder: Path, rows: Sequence[dict[str, Any]], *, judge: str
) -> tuple[list[Path], list[str]]:
    """Write ``table.md`` and ``scores.png`` into ``folder`` (atomically); returns the files
    and the table's lines for the terminal."""
    cells = aggregate(rows)
    table = render_table(cells, judge)
    table_path, png_path = folder / "table.md", folder / "scores.png"
    with atomic_file(table_path) as tmp:
        tmp.write_text(table, encoding="utf-8")
    with atomic_file(png_path) as tmp:
        _plot(cells, judge, tmp.with_suffix(".png"))
        tmp.with_suffix(".png").replace(tmp)
    return [table_path, png_path], [line for line in table.splitlines() if line.startswith("|")]
