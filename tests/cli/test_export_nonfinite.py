"""A vector file with NaN / inf values is refused up front: one line naming file and layer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import build_model

from caa_bake.core.errors import CaaBakeError
from caa_bake.steering.vector import SteeringVector
from cli.main import main


def _vector_file(path: Path, bad: dict[int, float]) -> Path:
    """Layers 1-3 of size 32; ``bad`` puts one value into the given layers."""
    tensors = {}
    for layer in (1, 2, 3):
        values = torch.ones(32)
        if layer in bad:
            values[5] = bad[layer]
        tensors[f"layer.{layer}"] = values
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_load_refuses_non_finite_values(tmp_path: Path, value: float) -> None:
    path = _vector_file(tmp_path / "v.safetensors", {2: value})
    with pytest.raises(CaaBakeError) as exc:
        SteeringVector.load(path)
    assert str(exc.value) == (
        f"vector file {path}: layer 2 has 1 NaN/inf value(s); re-extract the vector or fix the file"
    )


def test_load_names_the_first_bad_layer_and_counts_the_rest(tmp_path: Path) -> None:
    path = _vector_file(tmp_path / "v.safetensors", {3: float("nan"), 2: float("inf")})
    with pytest.raises(CaaBakeError, match=r"layer 2 has 1 NaN/inf value\(s\) \(and 1 more"):
        SteeringVector.load(path)
    assert SteeringVector.load(_vector_file(tmp_path / "ok.safetensors", {})).layer_ids == [1, 2, 3]


@pytest.mark.parametrize("form", ["--vector", "--bake"])
def test_export_refuses_it_before_writing_anything(
    tmp_path: Path,
    form: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = build_model("llama", tmp_path / "tiny-llama")
    vector = _vector_file(tmp_path / "bad.safetensors", {1: float("nan")})
    exports = tmp_path / "exported_models"
    monkeypatch.setenv("CAA_BAKE_EXPORTS_DIR", str(exports))
    out = tmp_path / "out" / "baked"
    spec = (
        ["--behavior", "custom", "--layer", "1", "--mult", "2", "--vector", str(vector)]
        if form == "--vector"
        else ["--bake", f"{vector}:1:2"]
    )
    argv = ["caa-bake", "export", "--model", str(source), *spec, "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    capsys.readouterr()  # build_model's progress bar
    with pytest.raises(SystemExit) as exc:
        main()
    stdout, stderr = capsys.readouterr()
    assert exc.value.code == 1
    assert stderr.splitlines() == [
        f"error: vector file {vector}: layer 1 has 1 NaN/inf value(s); re-extract the vector "
        "or fix the file"
    ]
    assert "Traceback" not in stdout
    assert not out.parent.exists() and not exports.exists()
