"""The PNG figures of ``caa-bake analyze`` (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["plot_heatmaps", "plot_model_cosines", "plot_pca", "plot_projection"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ticks(labels: Sequence[str], most: int = 16) -> list[int]:
    step = max(1, math.ceil(len(labels) / most))
    return list(range(0, len(labels), step))


def plot_heatmaps(
    panels: Mapping[str, tuple[Sequence[str], torch.Tensor]],
    path: Path,
    title: str,
    *,
    axis: str = "",
) -> Path:
    """One cosine heat map (range -1..1) per panel, at most 4 per row."""
    plt = _pyplot()
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    size = 3.4 if len(panels) > 1 else 5.2
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    image = None
    for ax, (name, (labels, matrix)) in zip(axes.flat, panels.items(), strict=False):
        image = ax.imshow(matrix.numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
        ticks = _ticks(labels)
        ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=7)
        ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=7)
        if len(labels) <= 8:
            for i in range(len(labels)):
                for j in range(len(labels)):
                    ax.text(j, i, f"{float(matrix[i, j]):.2f}", ha="center", va="center",
                            fontsize=7)  # fmt: skip
        ax.set_title(name, fontsize=9)
        if axis:
            ax.set_xlabel(axis, fontsize=8)
            ax.set_ylabel(axis, fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.4, hspace=0.4)
    if image is not None:
        fig.colorbar(image, ax=list(axes.flat), shrink=0.8, label="cosine")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_model_cosines(
    layers: Sequence[int],
    cosines: Mapping[str, Sequence[float]],
    path: Path,
    model: str,
    other: str,
) -> Path:
    """cos(vector of ``model``, vector of ``other``) against layer, one line per behavior."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (name, values) in enumerate(cosines.items()):
        ax.plot(list(layers), list(values), marker=".", color=f"C{i}", label=name)
    ax.set_ylim(-1.05, 1.05)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel("cosine")
    ax.set_title(f"{model}\nvs {other}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_pca(
    panels: Sequence[tuple[str, torch.Tensor, Sequence[str], tuple[float, float]]],
    path: Path,
    title: str,
    *,
    rows: Sequence[tuple[str, Mapping[str, str]]] = (),
) -> Path:
    """Scatter plots of 2-D PCA coordinates: one column per panel, one row per colouring.

    ``panels``: (title, coords ``[N, 2]``, per-point labels for each row joined by ``|``,
    explained-variance ratios). ``rows``: (row name, colour of each label value).
    """
    plt = _pyplot()
    ncols = len(panels)
    nrows = max(1, len(rows))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.9 * ncols, 2.9 * nrows), squeeze=False)
    for col, (name, coords, labels, explained) in enumerate(panels):
        parts = [label.split("|") for label in labels]
        for row, (row_name, colours) in enumerate(rows):
            ax = axes[row, col]
            for value, colour in colours.items():
                mask = torch.tensor([p[row] == value for p in parts])
                if bool(mask.any()):
                    xy = coords[mask]
                    ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.45, color=colour,
                               label=value, linewidths=0)  # fmt: skip
            ax.set_title(f"{name} (PC1 {explained[0]:.0%}, PC2 {explained[1]:.0%})", fontsize=8)
            ax.tick_params(labelsize=6)
            if col == 0:
                ax.set_ylabel(f"{row_name}\nPC2", fontsize=8)
                ax.legend(fontsize=6, markerscale=3, loc="best")
            ax.set_xlabel("PC1", fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)


def plot_projection(
    tokens: Sequence[str], series: Mapping[str, Sequence[float]], path: Path, title: str
) -> Path:
    """Per-token projection onto the unit vector, one line per model; with several models a
    second panel shows each one's difference from the first. The y range leaves out the
    first token (an attention sink, often orders of magnitude larger); its value is printed."""
    plt = _pyplot()
    width = min(24.0, max(6.4, 0.22 * len(tokens)))
    names = list(series)
    rows = 2 if len(names) > 1 else 1
    fig, axes = plt.subplots(rows, 1, figsize=(width, 3.6 * rows + 0.8), squeeze=False)
    top = axes[0, 0]
    for i, name in enumerate(names):
        top.plot(range(len(series[name])), list(series[name]), marker=".", color=f"C{i}",
                 label=name)  # fmt: skip
    rest = [v for values in series.values() for v in list(values)[1:]]
    if rest:
        low, high = min(rest), max(rest)
        margin = 0.08 * (high - low or 1.0)
        top.set_ylim(low - margin, high + margin)
        firsts = ", ".join(f"{series[n][0]:.3g}" for n in names)
        top.text(0.0, 1.01, f"first token (off scale): {firsts}", transform=top.transAxes,
                 fontsize=7)  # fmt: skip
    top.set_ylabel("projection on the unit vector")
    top.set_title(title, fontsize=9)
    top.legend(fontsize=7)
    if rows == 2:
        first = list(series[names[0]])
        low_ax = axes[1, 0]
        for i, name in enumerate(names[1:], start=1):
            diff = [b - a for a, b in zip(first, series[name], strict=True)]
            low_ax.plot(range(len(diff)), diff, marker=".", color=f"C{i}",
                        label=f"{name} - {names[0]}")  # fmt: skip
        low_ax.set_ylabel("difference")
        low_ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.grid(alpha=0.3)
        if len(tokens) <= 120:
            ax.set_xticks(range(len(tokens)), [t.replace("\n", "\\n") for t in tokens],
                          rotation=90, fontsize=6)  # fmt: skip
    axes[-1, 0].set_xlabel("token")
    return _save(plt, fig, path)
