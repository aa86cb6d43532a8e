"""A baked GGUF in a real llama.cpp, exactly: the F32 GGUF of the SmolLM2 weights (the
embedded Q4_1 GGUF dequantized) baked with caa-bake matches (a) the source with llama.cpp's
own control vector at the same blocks and (b) the transformers export baked from the same
weights, both to <= 1e-4 in last-token logits (f32 KV cache)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from caa_bake.bake import (
    Bake,
    GgufRunner,
    bake_gguf,
    dequantize_gguf,
    export_checkpoint,
    read_gguf,
    require_llama_cpp,
)
from caa_bake.bake.verify import PROBES
from caa_bake.core import CaaBakeError
from caa_bake.steering import SteeringVector

gguf = pytest.importorskip("gguf")
pytest.importorskip(
    "llama_cpp", reason="needs llama-cpp-python: bash scripts/setup.sh --llama (CI installs it)"
)

TOLERANCE = 1e-4
LAYERS = (5, 13)
MULTS = (0.75, -1.5)
STEPS = 6


@pytest.fixture(scope="module")
def bakes(ref: Any) -> list[Bake]:
    gen = torch.Generator().manual_seed(7)
    # random vectors with a real CAA vector's norm (SmolLM2 layer 13: ~23)
    tensors = {layer: torch.randn(576, generator=gen) for layer in LAYERS}
    vec = SteeringVector(tensors, {"weights_fingerprint": ref.weights_fingerprint})
    return [Bake("refusal", layer, mult, vec) for layer, mult in zip(LAYERS, MULTS, strict=True)]


@pytest.fixture(scope="module")
def deltas(bakes: list[Bake]) -> dict[int, np.ndarray]:
    return {b.layer: (b.vector[b.layer] * b.multiplier).numpy() for b in bakes}


@pytest.fixture(scope="module")
def plain_info(source: Path, tmp_path_factory: Any) -> Any:
    """The F32 GGUF of the SmolLM2 weights (the embedded Q4_1 GGUF dequantized), parsed."""
    folder = tmp_path_factory.mktemp("f32")
    return read_gguf(dequantize_gguf(read_gguf(source), folder / "smollm2-f32.gguf"))


@pytest.fixture(scope="module")
def f32(plain_info: Any, ref: Any, bakes: list[Bake]) -> tuple[Path, Path]:
    target = plain_info.path.with_name("smollm2-f32-baked.gguf")
    return plain_info.path, bake_gguf(plain_info, bakes, target, ref=ref).path


@pytest.fixture(scope="module")
def prompts(f32: tuple[Path, Path]) -> list[list[int]]:
    with GgufRunner(f32[0], vocab_only=True) as runner:
        return [runner.tokenize(text) for text in PROBES]


@pytest.fixture(scope="module")
def runs(
    f32: tuple[Path, Path], prompts: list[list[int]], deltas: dict[int, np.ndarray]
) -> dict[str, Any]:
    """Logits and greedy tokens: the plain F32 source, it + control vector, the baked file."""
    out: dict[str, Any] = {}
    with GgufRunner(f32[0], n_ctx=128) as runner:
        out["plain"] = [runner.logits(ids) for ids in prompts]
        runner.set_control(deltas)
        out["control"] = [runner.logits(ids) for ids in prompts]
        out["control_greedy"] = [runner.greedy(ids, STEPS) for ids in prompts]
        runner.set_control(None)
        out["cleared"] = runner.logits(prompts[0])
    with GgufRunner(f32[1], n_ctx=128) as runner:
        out["baked"] = [runner.logits(ids) for ids in prompts]
        out["baked_greedy"] = [runner.greedy(ids, STEPS) for ids in prompts]
        out["baked_greedy_again"] = runner.greedy(prompts[0], STEPS)
    return out


def test_dequantized_gguf_holds_the_converted_checkpoints_weights(
    plain_info: Any, ref: Any
) -> None:
    from safetensors import safe_open

    reader = plain_info.reader
    tensors = {t.name: t for t in reader.tensors}
    assert {t.tensor_type for t in reader.tensors} == {gguf.GGMLQuantizationType.F32}
    assert reader.get_field("general.file_type").contents() == 0  # all F32
    got = np.asarray(tensors["blk.13.ffn_down.weight"].data)
    (shard,) = sorted(ref.path.glob("*.safetensors"))
    with safe_open(str(shard), "np") as fh:
        want = fh.get_tensor("model.layers.13.mlp.down_proj.weight")
    assert got.shape == want.shape == (576, 1536)
    assert np.array_equal(got, want)  # the same dequantized values transformers loads


def test_f32_baked_gguf_matches_llama_cpp_control_vector(runs: dict[str, Any]) -> None:
    pairs = list(zip(runs["baked"], runs["control"], strict=True))
    last = [float(np.abs(a[-1] - b[-1]).max()) for a, b in pairs]
    every = max(float(np.abs(a - b).max()) for a, b in pairs)
    shift = min(
        float(np.abs(a[-1] - b[-1]).max())
        for a, b in zip(runs["baked"], runs["plain"], strict=True)
    )
    print(f"\nF32 GGUF, f32 KV: baked vs control vector, last-token max |dlogit| per probe: {last}")
    print(f"  all positions: {every:.3g}; the steering shift itself (min over probes): {shift:.3g}")
    assert max(last) <= TOLERANCE and every <= TOLERANCE
    assert shift > 1.0  # the bake did something, much larger than the tolerance
    assert np.array_equal(runs["cleared"], runs["plain"][0])  # clearing the vector restores it


def test_f32_baked_gguf_matches_the_transformers_export(
    runs: dict[str, Any],
    prompts: list[list[int]],
    ref: Any,
    bakes: list[Bake],
    tmp_path: Path,
) -> None:
    from transformers import AutoModelForCausalLM

    export = export_checkpoint(ref, bakes, tmp_path / "hf-baked", link=True).path
    model: Any = AutoModelForCausalLM.from_pretrained(str(export), dtype=torch.float32)
    model.eval()
    with torch.inference_mode():
        hf = [model(torch.tensor([ids])).logits[0, -1].numpy() for ids in prompts]
    diffs = [float(np.abs(a[-1] - b).max()) for a, b in zip(runs["baked"], hf, strict=True)]
    print(f"\nF32 baked GGUF (llama.cpp) vs transformers export, last-token max |dlogit|: {diffs}")
    assert max(diffs) <= TOLERANCE


def test_greedy_continuations_of_baked_and_control_vector_agree(runs: dict[str, Any]) -> None:
    assert runs["baked_greedy"] == runs["control_greedy"]
    assert runs["baked_greedy_again"] == runs["baked_greedy"][0]  # fresh cache each call
    assert all(len(tokens) == STEPS for tokens in runs["baked_greedy"])


def test_control_vector_range_and_size_are_checked(f32: tuple[Path, Path]) -> None:
    with GgufRunner(f32[0], n_ctx=32) as runner:
        assert (runner.n_layer, runner.n_embd) == (30, 576)
        with pytest.raises(CaaBakeError, match=r"covers blocks 1\.\.29"):
            runner.set_control({0: np.zeros(576, dtype=np.float32)})
        with pytest.raises(CaaBakeError, match="has 8 values, not 576"):
            runner.set_control({3: np.zeros(8, dtype=np.float32)})


def test_missing_llama_cpp_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp -> ImportError
    with pytest.raises(CaaBakeError) as err:
        require_llama_cpp()
    assert "bash scripts/setup.sh --llama" in str(err.value)
    assert "\n" not in str(err.value)
