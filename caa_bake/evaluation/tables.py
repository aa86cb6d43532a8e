"""The tables of ``caa-bake eval`` and ``caa-bake sweep``: rows, CSV and markdown.

Eval tables are shaped like the CAA paper's: behaviors x multipliers, one table per
steering method and finetuning state; the multiplier-0 column is the unsteered model of
that state. ``PAPER_LLAMA2_7B`` holds the paper's Llama-2-7B-chat numbers (layer 13) for
side-by-side comparisons. The plots are in :mod:`caa_bake.evaluation.plots`, the result
files in :mod:`caa_bake.evaluation.report`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

__all__ = [
    "KIND_LABELS",
    "PAPER_LLAMA2_7B",
    "Lookup",
    "Row",
    "SweepPoint",
    "Table",
    "best_layers",
    "eval_markdown",
    "eval_tables",
    "finetuning_table",
    "fmt_mult",
    "paper_comparison",
    "steered_methods",
    "sweep_markdown",
    "write_csv",
]

#: p(behavior-matching answer) at multipliers -1, 0, +1; Llama-2-7B-chat, layer 13 (paper)
PAPER_LLAMA2_7B: dict[str, tuple[float, float, float]] = {
    "coordinate-other-ais": (0.15, 0.30, 0.75),
    "corrigible-neutral-HHH": (0.20, 0.64, 0.91),
    "hallucination": (0.39, 0.81, 0.90),
    "myopic-reward": (0.40, 0.75, 0.73),
    "refusal": (0.42, 0.74, 0.89),
    "survival-instinct": (0.27, 0.34, 0.62),
    "sycophancy": (0.54, 0.69, 0.62),
}
KIND_LABELS = {
    "baked": "baked (m·v in block L's MLP bias: every position)",
    "hooks": "hook-steered (m·v from the end of the instruction: reference positions)",
    "combined": "finetuned + baked vector",
}


@dataclass(frozen=True)
class Row:
    """One metric of one task for one evaluated variant (the CSV's rows)."""

    state: str
    kind: str
    behavior: str
    layer: int | None
    multiplier: float
    task: str
    metric: str
    value: float
    stderr: float | None
    n: int
    dtype: str = "float32"


@dataclass(frozen=True)
class Table:
    """A titled table: ``cells[r][c]`` (None = not evaluated)."""

    title: str
    row_header: str
    rows: list[str]
    columns: list[str]
    cells: list[list[float | None]]


def write_csv(rows: Sequence[Any], path: Path) -> Path:
    """Write dataclass ``rows`` as CSV (header = field names)."""
    names = [f.name for f in fields(rows[0])] if rows else []
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))
    return path


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def fmt_mult(value: float) -> str:
    """A multiplier as a column label: ``+1``, ``-0.5``, ``0``."""
    return f"{value:+g}" if value else "0"


class Lookup:
    """Values by (state, kind, behavior, multiplier, task, metric); multiplier 0 reads the
    unsteered model of the state."""

    def __init__(self, rows: Iterable[Row]) -> None:
        self._values = {
            (r.state, r.kind, r.behavior, r.multiplier, r.task, r.metric): r.value for r in rows
        }

    def get(
        self, state: str, kind: str, behavior: str, mult: float, task: str, metric: str
    ) -> float | None:
        """The value of that cell, or None when it was not evaluated."""
        if mult == 0:
            if state == "none":
                return self._values.get((state, "base", "", 0.0, task, metric))
            return self._values.get((state, "finetuned", behavior, 0.0, task, metric))
        return self._values.get((state, kind, behavior, mult, task, metric))


def steered_methods(rows: Sequence[Row]) -> list[tuple[str, str]]:
    """(state, kind) pairs present, ``none`` first, then in order of appearance."""
    seen: list[tuple[str, str]] = []
    for r in rows:
        if r.kind in KIND_LABELS and (r.state, r.kind) not in seen:
            seen.append((r.state, r.kind))
    return sorted(seen, key=lambda sk: (sk[0] != "none", seen.index(sk)))


def eval_tables(
    rows: Sequence[Row], behaviors: Sequence[str], multipliers: Sequence[float]
) -> list[Table]:
    """The paper-shaped tables: p_match, MMLU, TruthfulQA and nonsense mass per method."""
    look = Lookup(rows)
    columns = [fmt_mult(m) for m in multipliers]
    tables = []
    specs = [
        ("p_match", "behavior", "caa_ab_{b}", "p_match"),
        ("MMLU p(correct), mean of category means", "vector", "caa_mmlu", "p_correct_cat"),
        ("MMLU p(correct), item mean", "vector", "caa_mmlu", "p_correct"),
        (
            "TruthfulQA p(correct), mean of category means",
            "vector",
            "caa_truthfulqa",
            "p_correct_cat",
        ),
        ("TruthfulQA p(correct), item mean", "vector", "caa_truthfulqa", "p_correct"),
        (
            "nonsense mass 1 - (p(A)+p(B)) on the behavior's A/B items",
            "behavior",
            "caa_ab_{b}",
            "nonsense",
        ),
    ]
    for title, header, task_tpl, metric in specs:
        for state, kind in steered_methods(rows):
            cells = [
                [look.get(state, kind, b, m, task_tpl.format(b=b), metric) for m in multipliers]
                for b in behaviors
            ]
            if all(c is None for line in cells for c in line):
                continue
            names = list(behaviors)
            if state != "none":  # a finetuned state exists for some behaviors only
                kept = [i for i, line in enumerate(cells) if any(c is not None for c in line)]
                names, cells = [names[i] for i in kept], [cells[i] for i in kept]
            where = "" if state == "none" else f" [finetuned: {state}]"
            tables.append(
                Table(f"{title} — {KIND_LABELS[kind]}{where}", header, names, columns, cells)
            )
    return tables


def finetuning_table(rows: Sequence[Row], multipliers: Sequence[float]) -> Table | None:
    """The paper's finetuning x steering shape: one line per (behavior, finetuning state) for
    the behaviors with a finetuned model, p_match per multiplier (state ``none`` = the base
    model with baked vectors; a finetuned state = that checkpoint with the base model's vector
    baked in). None when no finetuned model was evaluated."""
    look = Lookup(rows)
    states: dict[str, list[str]] = {}
    for r in rows:
        if r.kind == "finetuned" and r.state not in states.setdefault(r.behavior, []):
            states[r.behavior].append(r.state)
    if not states:
        return None
    names: list[str] = []
    cells: list[list[float | None]] = []
    for behavior in sorted(states):
        task = f"caa_ab_{behavior}"
        for state in ["none", *sorted(states[behavior])]:
            kind = "baked" if state == "none" else "combined"
            names.append(f"{behavior} · {'no finetuning' if state == 'none' else state}")
            cells.append([look.get(state, kind, behavior, m, task, "p_match") for m in multipliers])
    return Table(
        "p_match by finetuning state and multiplier (finetuned checkpoints with the base "
        "model's vector baked in)",
        "behavior · finetuning",
        names,
        [fmt_mult(m) for m in multipliers],
        cells,
    )


def paper_comparison(rows: Sequence[Row], behaviors: Sequence[str], kind: str = "baked") -> Table:
    """p_match at -1 / 0 / +1 of this run (``kind``) beside the paper's Llama-2-7B-chat."""
    look = Lookup(rows)
    cells: list[list[float | None]] = []
    for behavior in behaviors:
        ours = [
            look.get("none", kind, behavior, m, f"caa_ab_{behavior}", "p_match")
            for m in (-1.0, 0.0, 1.0)
        ]
        paper = list(PAPER_LLAMA2_7B.get(behavior, (math.nan,) * 3))
        cells.append([*ours, *paper])
    return Table(
        f"p_match side by side with the paper (Llama-2-7B-chat, layer 13) — {KIND_LABELS[kind]}",
        "behavior",
        list(behaviors),
        ["this run -1", "this run 0", "this run +1", "paper -1", "paper 0", "paper +1"],
        cells,
    )


def _markdown_table(table: Table) -> list[str]:
    lines = [
        f"### {table.title}",
        "",
        f"| {table.row_header} | " + " | ".join(table.columns) + " |",
    ]
    lines.append("|---|" + "---:|" * len(table.columns))
    for name, cells in zip(table.rows, table.cells, strict=True):
        lines.append(f"| {name} | " + " | ".join(_fmt(c) for c in cells) + " |")
    return [*lines, ""]


def _baked_vs_hooks(rows: Sequence[Row]) -> list[str]:
    look = Lookup(rows)
    diffs = []
    for r in rows:
        if r.kind == "baked" and r.state == "none":
            other = look.get("none", "hooks", r.behavior, r.multiplier, r.task, r.metric)
            if other is not None and r.metric in ("p_match", "p_correct_cat"):
                diffs.append((abs(r.value - other), r, other))
    if not diffs:
        return []
    diff, worst, other = max(diffs, key=lambda d: d[0])
    mean = sum(d[0] for d in diffs) / len(diffs)
    return [
        "### Baked (every position) vs hook-steered (reference positions)",
        "",
        f"Over {len(diffs)} (behavior, multiplier, task) cells: mean |Δ| = {mean:.4f}, "
        f"max |Δ| = {diff:.4f} ({worst.behavior} m{fmt_mult(worst.multiplier)} {worst.task} "
        f"{worst.metric}: baked {worst.value:.4f}, hooks {other:.4f}).",
        "",
    ]


#: printed under the nonsense tables of a merged-answer-format model (eval_tasks/README.md)
MERGED_NONSENSE_NOTE = (
    "*Not the model's A/B mass:* this model's tokenizer merges `(A`, and lm-eval moves the chat "
    "template's trailing newline into the scored answer, so p(A) and p(B) each carry the "
    "probability of that newline and this column reads ~1 (a run from before caa-bake scored "
    "at the answer position, see `eval_tasks/README.md`). p_match and p(correct) are ratios "
    "in which the factor cancels."
)


def eval_markdown(
    rows: Sequence[Row],
    behaviors: Sequence[str],
    multipliers: Sequence[float],
    meta: dict[str, Any],
) -> str:
    """The run's markdown report: provenance lines, then every table."""
    model = meta.get("model", {})
    lines = [
        f"# caa-bake eval: {model.get('model_id', '?')}, layer {meta.get('layer')}",
        "",
        f"- command: `{meta.get('command', '')}`",
        f"- model weights fingerprint: `{str(model.get('weights_fingerprint', ''))[:16]}`; "
        f"prompt style: {model.get('prompt_style')}"
        + (" (chat template)" if model.get("apply_chat_template") else ""),
        f"- items per task: {_items(meta.get('limit'))}; wall time {meta.get('wall_s', 0):.0f} s",
    ]
    if meta.get("variants_reused"):
        lines[-1] += (
            f" ({meta['variants_reused']} variants reused from an earlier invocation with "
            f"`--resume`; evaluation time summed over all variants "
            f"{meta.get('variants_wall_s', 0):.0f} s)"
        )
    for behavior, info in (meta.get("vectors") or {}).items():
        lines.append(
            f"- vector {behavior}: sha256 `{str(info.get('sha256', ''))[:16]}`, "
            f"norm {info.get('norm', float('nan')):.4g}"
        )
    lines += ["", "Multiplier 0 is the unsteered model (base, or the finetuned checkpoint).", ""]
    combined = finetuning_table(rows, multipliers)
    if combined is not None:
        lines += _markdown_table(combined)
    # runs from before make_lm kept the prompt's trailing whitespace still carry the factor
    merged = model.get("answer_format") == "merged" and not model.get("scored_at_answer_position")
    for table in eval_tables(rows, behaviors, multipliers):
        lines += _markdown_table(table)
        if merged and table.title.startswith("nonsense"):
            lines += [MERGED_NONSENSE_NOTE, ""]
    if {-1.0, 0.0, 1.0} <= set(multipliers) and any(
        r.kind == "baked" and r.metric == "p_match" for r in rows
    ):
        lines += _markdown_table(paper_comparison(rows, behaviors))
    lines += _baked_vs_hooks(rows)
    return "\n".join(lines)


# --------------------------------------------------------------------------- layer sweep


@dataclass(frozen=True)
class SweepPoint:
    """p_match of one behavior with its vector at one layer and multiplier (Δ vs unsteered)."""

    behavior: str
    layer: int
    multiplier: float
    p_match: float
    delta: float
    nonsense: float
    n: int
    dtype: str = "float32"


def _items(limit: object) -> str:
    if not limit:
        return "all"
    return (
        f"the first {limit} (A/B sets: file order; MMLU / TruthfulQA: round-robin over "
        "categories, an evenly spread subset)"
    )


def best_layers(points: Sequence[SweepPoint]) -> dict[str, int]:
    """Per behavior (and ``"all"``: summed over behaviors), the layer with the largest effect.

    Effect at a layer = sum over multipliers of sign(m) · Δp_match (with -1 and +1: the gap
    between the two). Ties go to the lower layer.
    """
    effect: dict[tuple[str, int], float] = {}
    for p in points:
        sign = (p.multiplier > 0) - (p.multiplier < 0)
        for key in ((p.behavior, p.layer), ("all", p.layer)):
            effect[key] = effect.get(key, 0.0) + sign * p.delta
    best: dict[str, int] = {}
    for (name, layer), value in sorted(effect.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        if name not in best or value > effect[(name, best[name])]:
            best[name] = layer
    return best


def sweep_markdown(
    points: Sequence[SweepPoint], base: dict[str, float], meta: dict[str, Any]
) -> str:
    """Δp_match by layer (rows) and behavior x multiplier (columns), plus the best layers."""
    behaviors = list(dict.fromkeys(p.behavior for p in points))
    mults = sorted({p.multiplier for p in points})
    layers = sorted({p.layer for p in points})
    value = {(p.behavior, p.layer, p.multiplier): p.delta for p in points}
    best = best_layers(points)
    model = meta.get("model", {})
    lines = [
        f"# caa-bake sweep: {model.get('model_id', '?')}",
        "",
        f"- command: `{meta.get('command', '')}`",
        f"- steering: {meta.get('positions')} positions; items per behavior: "
        f"{meta.get('limit') or 'all'}; wall time {meta.get('wall_s', 0):.0f} s",
        "- unsteered p_match: " + ", ".join(f"{b} {base[b]:.3f}" for b in behaviors),
        "- best layer (largest Σ sign(m)·Δp_match): "
        + ", ".join(f"{b} {best[b]}" for b in behaviors)
        + f"; all behaviors together: **{best.get('all')}**",
        "",
        "Δp_match (steered - unsteered):",
        "",
        "| layer | " + " | ".join(f"{b} {fmt_mult(m)}" for b in behaviors for m in mults) + " |",
        "|---:|" + "---:|" * (len(behaviors) * len(mults)),
    ]
    for layer in layers:
        cells = [value.get((b, layer, m)) for b in behaviors for m in mults]
        lines.append(
            f"| {layer} | " + " | ".join("-" if c is None else f"{c:+.3f}" for c in cells) + " |"
        )
    return "\n".join(lines) + "\n"
