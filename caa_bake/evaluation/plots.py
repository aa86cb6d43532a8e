"""The PNG plots of ``caa-bake eval`` and ``caa-bake sweep`` (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from caa_bake.evaluation.tables import Lookup, Row, SweepPoint, fmt_mult, steered_methods

__all__ = ["plot_eval", "plot_sweep"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panel_grid(plt: Any, panels: int, width: float) -> tuple[Any, Any]:
    """A figure with one panel per behavior, at most 4 per row."""
    ncols = min(4, panels)
    nrows = math.ceil(panels / ncols)
    return plt.subplots(nrows, ncols, figsize=(width * ncols, 3.0 * nrows), squeeze=False)


def _save_grid(plt: Any, fig: Any, axes: Any, panels: int, path: Path) -> Path:
    """Hide the unused panels, put the legend on the first, and write the PNG."""
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_eval(
    rows: Sequence[Row], folder: Path, behaviors: Sequence[str], multipliers: Sequence[float]
) -> list[Path]:
    """``p_match.png`` (one panel per behavior) and ``mmlu.png`` / ``truthfulqa.png``."""
    plt = _pyplot()
    look = Lookup(rows)
    methods = steered_methods(rows)
    out: list[Path] = []
    if any(r.metric == "p_match" for r in rows):  # no A/B task, no p_match figure
        fig, axes = _panel_grid(plt, len(behaviors), 3.6)
        for ax, behavior in zip(axes.flat, behaviors, strict=False):
            for state, kind in methods:
                ys = [
                    look.get(state, kind, behavior, m, f"caa_ab_{behavior}", "p_match")
                    for m in multipliers
                ]
                label = kind if state == "none" else f"{kind} [{state}]"
                ax.plot(
                    multipliers,
                    [math.nan if y is None else y for y in ys],
                    marker="o",
                    label=label,
                    linestyle="-" if kind != "hooks" else "--",
                )
            ax.set_title(behavior, fontsize=9)
            ax.set_ylim(0, 1)
            ax.set_xlabel("multiplier")
            ax.set_ylabel("p(matching)")
            ax.grid(alpha=0.3)
        out.append(_save_grid(plt, fig, axes, len(behaviors), folder / "p_match.png"))
    for task, name in (("caa_mmlu", "mmlu"), ("caa_truthfulqa", "truthfulqa")):
        if not any(r.task == task for r in rows):
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for i, behavior in enumerate(behaviors):
            for state, kind in methods:
                ys = [
                    look.get(state, kind, behavior, m, task, "p_correct_cat") for m in multipliers
                ]
                ax.plot(
                    multipliers,
                    [math.nan if y is None else y for y in ys],
                    marker="o",
                    color=f"C{i}",
                    linestyle="-" if kind != "hooks" else "--",
                    label=f"{behavior} ({kind}{'' if state == 'none' else ', ' + state})",
                )
        ax.set_xlabel("multiplier")
        ax.set_ylabel("p(correct), mean of category means")
        kinds = {kind for _state, kind in methods}
        styles = "baked (solid) and hook-steered (dashed)" if "hooks" in kinds else "steered"
        ax.set_title(f"{name}: {styles}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        out.append(folder / f"{name}.png")
        fig.savefig(out[-1], dpi=110)
        plt.close(fig)
    return out


def plot_sweep(points: Sequence[SweepPoint], path: Path) -> Path:
    """Δp_match against layer, one line per multiplier, one panel per behavior."""
    plt = _pyplot()
    behaviors = list(dict.fromkeys(p.behavior for p in points))
    mults = sorted({p.multiplier for p in points})
    fig, axes = _panel_grid(plt, len(behaviors), 3.8)
    for ax, behavior in zip(axes.flat, behaviors, strict=False):
        for i, mult in enumerate(mults):
            mine = sorted(
                (p.layer, p.delta)
                for p in points
                if p.behavior == behavior and p.multiplier == mult
            )
            ax.plot(
                [x for x, _ in mine],
                [y for _, y in mine],
                marker=".",
                color=f"C{i}",
                label=f"m = {fmt_mult(mult)}",
            )
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_title(behavior, fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylabel("Δ p(matching)")
        ax.grid(alpha=0.3)
    return _save_grid(plt, fig, axes, len(behaviors), path)
