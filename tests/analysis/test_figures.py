"""The figures are real PNG files of the expected layout."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from caa_bake.analysis.figures import (
    plot_heatmaps,
    plot_model_cosines,
    plot_pca,
    plot_projection,
)


def _png(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        return image.size


def test_every_figure_is_a_png(tmp_path: Path) -> None:
    matrix = torch.eye(3, dtype=torch.float64)
    one = _png(plot_heatmaps({"a": (["0", "1", "2"], matrix)}, tmp_path / "h1.png", "t"))
    four = {str(i): (["0", "1", "2"], matrix) for i in range(5)}
    many = _png(plot_heatmaps(four, tmp_path / "h5.png", "t", axis="layer"))
    assert many[0] > one[0] and many[1] > one[1]  # 4 per row, 2 rows
    _png(plot_model_cosines([0, 1], {"a": [0.5, 0.9]}, tmp_path / "m.png", "x", "y"))
    coords = torch.randn(8, 2, dtype=torch.float64)
    labels = ["matching|A", "not matching|B"] * 4
    rows = [("side", {"matching": "b", "not matching": "r"}), ("letter", {"A": "g", "B": "m"})]
    panels = [("L0", coords, labels, (0.5, 0.2)), ("L1", coords, labels, (0.4, 0.3))]
    assert _png(plot_pca(panels, tmp_path / "p.png", "t", rows=rows)) == (638, 638)  # 2 x 2
    _png(plot_projection(["a", "\n", "b"], {"base": [0.1, 0.2, -0.3]}, tmp_path / "l.png", "t"))
