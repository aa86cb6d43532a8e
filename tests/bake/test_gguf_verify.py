"""``verify_gguf``: the embedded Q4_1 SmolLM2 GGUF baked by caa-bake, checked in a real
llama.cpp against the source plus llama.cpp's control vector. As stored (Q4_1) the numbers
are reported (activation quantization rounds the two routes differently); dequantized to
F32 the match is exact to <= 1e-4. File-level checks on hand-written GGUFs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from caa_bake.bake import (
    GGUF_TOLERANCE,
    PROBES,
    SHIFT_COSINE_MIN,
    Bake,
    bake_gguf,
    gguf_deltas,
    read_gguf,
    verify_gguf,
)
from caa_bake.core import CaaBakeError
from caa_bake.steering import SteeringVector

gguf = pytest.importorskip("gguf")

# the three verify probes plus two more: the Q4_1 figures are over five prompts
MORE_PROBES = (
    *PROBES,
    "Would you like to be turned off and replaced by a newer model?",
    "What is the capital of France? Answer in one word.",
)


def _needs_llama() -> None:
    pytest.importorskip(
        "llama_cpp",
        reason="needs llama-cpp-python: bash scripts/setup.sh --llama (CI installs it)",
    )


@pytest.fixture(scope="module")
def baked(source: Path, ref: Any, tmp_path_factory: Any) -> Path:
    gen = torch.Generator().manual_seed(3)
    vec = SteeringVector(
        {13: torch.randn(576, generator=gen)}, {"weights_fingerprint": ref.weights_fingerprint}
    )
    out = tmp_path_factory.mktemp("q41") / "smollm2-q41-baked.gguf"
    return bake_gguf(source, [Bake("refusal", 13, -1.5, vec)], out, ref=ref).path


def test_q4_1_bake_verifies_in_llama_cpp(baked: Path, source: Path, tmp_path: Path) -> None:
    _needs_llama()
    report = verify_gguf(baked, probes=MORE_PROBES, new_tokens=6, workdir=tmp_path)
    print("\n" + "\n".join(report.lines()))
    assert report.source == source  # found by the sha256 the export records
    assert report.quantized and not report.byte_problems
    assert list(report.steered) == [13]
    exact = report.exact
    assert exact is not None
    assert exact.max_dlogit <= GGUF_TOLERANCE and all(exact.greedy_agree)
    stored = report.stored
    assert stored.min_cosine >= SHIFT_COSINE_MIN
    assert sum(stored.greedy_agree) >= len(MORE_PROBES) // 2 + 1  # most prompts
    assert report.ok and report.lines()[-1] == "verify: OK"
    assert list(tmp_path.iterdir()) == []  # the F32 copies are removed


def test_a_wrong_source_or_a_foreign_gguf_is_refused(tmp_path: Path, ref: Any) -> None:
    _needs_llama()
    src = _tiny(tmp_path / "src.gguf", None)
    other = _tiny(tmp_path / "other.gguf", None, weight=2.0)
    vec = SteeringVector({1: torch.arange(8.0)}, {"weights_fingerprint": "f" * 64})
    fake = dataclasses.replace(ref, weights_fingerprint="f" * 64)
    out = bake_gguf(src, [Bake("x", 1, 0.5, vec)], tmp_path / "b.gguf", ref=fake).path
    wrong = r"other\.gguf \(sha256 \w+\) is not the source of b\.gguf"
    with pytest.raises(CaaBakeError, match=wrong):
        verify_gguf(out, source=other)
    with pytest.raises(CaaBakeError, match=r"baked from a GGUF with sha256 .*; pass --source"):
        verify_gguf(out)  # not the embedded GGUF, and no --source
    with pytest.raises(CaaBakeError, match=r"src\.gguf is not a GGUF written by caa-bake export"):
        verify_gguf(src)


def _tiny(path: Path, bias: np.ndarray | None, weight: float = 1.0) -> Path:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(3)
    writer.add_embedding_length(8)
    writer.add_tensor("blk.1.ffn_down.weight", np.full((8, 16), weight, dtype=np.float32))
    if bias is not None:
        writer.add_tensor("blk.1.ffn_down.bias", bias)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_deltas_are_the_bias_difference_and_other_changes_are_listed(
    tmp_path: Path, ref: Any
) -> None:
    old = np.linspace(-1, 1, 8, dtype=np.float32)
    src = read_gguf(_tiny(tmp_path / "src.gguf", old))
    vec = SteeringVector({1: torch.arange(8.0)}, {"weights_fingerprint": "f" * 64})
    fake = dataclasses.replace(ref, weights_fingerprint="f" * 64)
    out = bake_gguf(src.path, [Bake("x", 1, 0.5, vec)], tmp_path / "b.gguf", ref=fake).path
    deltas, problems = gguf_deltas(read_gguf(out), src)
    assert problems == []
    assert list(deltas) == [1]
    np.testing.assert_allclose(deltas[1], np.arange(8.0) * 0.5, atol=1e-6)  # (old + d) - old
    changed = read_gguf(_tiny(tmp_path / "changed.gguf", old + 1, weight=2.0))
    deltas, problems = gguf_deltas(changed, src)
    assert problems == ["blk.1.ffn_down.weight differs"]
    assert np.array_equal(deltas[1], np.ones(8, dtype=np.float32))
    unbiased = read_gguf(_tiny(tmp_path / "unbiased.gguf", None))
    assert gguf_deltas(unbiased, src)[1] == ["blk.1.ffn_down.bias missing"]
