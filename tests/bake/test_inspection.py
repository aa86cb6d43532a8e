"""Reading an export's files: saved vectors, stored biases and the ``inspect`` description."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import build_model

from caa_bake.bake.bakes import Bake
from caa_bake.bake.export import export_checkpoint, read_export_block
from caa_bake.bake.inspection import baked_deltas, inspect_export, stored_deltas
from caa_bake.core.errors import CaaBakeError
from caa_bake.models.loading import resolve_model
from caa_bake.steering.vector import SteeringVector


def test_files_give_back_what_was_baked(tmp_path: Path) -> None:
    src = build_model("gpt2", tmp_path / "src", random_biases=True)
    gen = torch.Generator().manual_seed(0)
    vec = SteeringVector({layer: torch.randn(32, generator=gen) for layer in range(4)})
    bakes = [Bake("a", 1, 2.0, vec), Bake("b", 1, -0.5, vec), Bake("a", 3, 1.0, vec)]
    out = export_checkpoint(resolve_model(str(src)), bakes, tmp_path / "out").path
    block = read_export_block(out)
    expected = {1: vec[1] * 2.0 + vec[1] * -0.5, 3: vec[3]}
    rebuilt = baked_deltas(out, block)
    stored = stored_deltas(out, block)  # patched native biases minus their saved originals
    assert sorted(rebuilt) == sorted(stored) == [1, 3]
    for layer, want in expected.items():
        assert torch.allclose(rebuilt[layer], want)
        assert torch.allclose(stored[layer], want, atol=1e-6)
    lines = inspect_export(out)
    assert lines[0] == f"export: {out}"
    assert sum(line.startswith("  bias ") for line in lines) == 2
    (out / block["files"]["vectors"]).unlink()
    with pytest.raises(CaaBakeError, match="has no saved vectors"):
        baked_deltas(out, block)
