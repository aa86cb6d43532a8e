"""Bakes and bake specs: finite multipliers, ``--bake`` parsing, export names, provenance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from caa_bake.bake.bakes import Bake, BakeSpec, export_name, parse_bake_spec
from caa_bake.core.errors import CaaBakeError
from caa_bake.steering.vector import SteeringVector

HIDDEN = 32


def _vec(seed: int, layers: tuple[int, ...] = (1, 2)) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    return SteeringVector({layer: torch.randn(HIDDEN, generator=gen) for layer in layers})


@pytest.mark.parametrize("mult", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_multiplier(mult: float) -> None:
    with pytest.raises(CaaBakeError, match="multiplier must be a finite number"):
        Bake("t", 1, mult, _vec(0))


def test_bake_specs() -> None:
    assert parse_bake_spec("sycophancy:13:-1.5") == BakeSpec("sycophancy", 13, -1.5)
    spec = parse_bake_spec("/tmp/v/my-vec.safetensors:2:0.5")
    assert spec == BakeSpec("my-vec", 2, 0.5, Path("/tmp/v/my-vec.safetensors"))
    for bad in ("sycophancy:13", "sycophancy:x:1", "sycophancy:1:y", ":1:1"):
        with pytest.raises(CaaBakeError, match="cannot read --bake"):
            parse_bake_spec(bad)


def test_export_name_and_delta() -> None:
    vec = _vec(3)
    bakes = [Bake("refusal", 1, -1.0, vec), Bake("sycophancy", 2, 0.5, vec)]
    assert export_name("m", bakes) == "m-refusal-L1-m-1_sycophancy-L2-m0.5"
    assert torch.equal(bakes[1].delta(), vec[2] * 0.5)
    record = bakes[0].record()
    assert record["layer"] == 1 and record["multiplier"] == -1.0
    assert record["vector_sha256"] == vec.sha256(1)
    assert record["normalized"] is False and record["normalization_set"] == []
    with pytest.raises(CaaBakeError):
        Bake("t", 7, 1.0, vec)  # the vector has no layer 7
