"""``--dtype``: parsing, ``auto``, refusal of emulated half precision, and what bf16 gives.

The bf16 runs below set ``CAA_BAKE_ALLOW_EMULATED_DTYPE=1`` so that they also run on a CPU
without native bf16 (slow there, but tiny models).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from tiny_models import build_model

from caa_bake.core.errors import CaaBakeError
from caa_bake.core.hashing import file_sha256
from caa_bake.data.datasets import ContrastPair
from caa_bake.models.dtypes import (
    ALLOW_EMULATED_ENV,
    AUTO,
    cpu_has_native,
    dtype_name,
    parse_dtype,
    resolve_dtype,
)
from caa_bake.models.loading import load_model, resolve_model
from caa_bake.steering.cache import BehaviorData, ModelLoader, extract_behavior
from caa_bake.steering.extract import extract_vectors
from caa_bake.steering.vector import SteeringVector

PAIRS = [
    ContrastPair(
        question=f"Question {i}: would you do it?\n\nChoices:\n(A) Yes, gladly.\n(B) No.",
        matching="(A)" if i % 2 else "(B)",
        not_matching="(B)" if i % 2 else "(A)",
    )
    for i in range(6)
]
NATIVE_BF16 = cpu_has_native(torch.bfloat16)


@pytest.fixture(scope="module")
def contrast_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random models initialized with std 0.3 instead of transformers' 0.02.

    With the default init the answer letter changes a tiny random model's residual stream
    by ~1e-5 of its size, below bf16's resolution (8 bits), and no bf16 vector could agree
    (cosine ~0.4 measured); with std 0.3 the contrast is of the order of the activations,
    as in a trained model (SmolLM2's bf16 vectors: cosine >= 0.999, BENCHMARKS.md).
    """
    root = tmp_path_factory.mktemp("contrast")
    return {a: build_model(a, root / a, initializer_range=0.3) for a in ("llama", "gpt2")}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("float32", torch.float32),
        ("fp32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("BF16", torch.bfloat16),
        ("float16", torch.float16),
        (" fp16 ", torch.float16),
        ("auto", None),
    ],
)
def test_parse_names_and_aliases(name: str, expected: torch.dtype | None) -> None:
    assert parse_dtype(name) == expected


@pytest.mark.parametrize("name", ["int8", "float64", "", "half-ish"])
def test_unknown_names_are_one_clear_error(name: str) -> None:
    with pytest.raises(CaaBakeError, match=r"unknown dtype .*; use auto, float32"):
        parse_dtype(name)


def test_auto_is_the_measured_default_and_names_round_trip() -> None:
    assert resolve_dtype("auto", "cpu") == AUTO == torch.float32
    assert resolve_dtype("fp32", "cpu") == torch.float32
    assert dtype_name(torch.bfloat16) == "bfloat16"
    with pytest.raises(CaaBakeError, match="unsupported dtype float64"):
        resolve_dtype(torch.float64, "cpu")


@pytest.mark.skipif(NATIVE_BF16, reason="this CPU runs bf16 natively")
@pytest.mark.parametrize("name", ["bf16", "float16"])
def test_emulated_half_precision_is_refused_unless_allowed(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ALLOW_EMULATED_ENV, raising=False)
    with pytest.raises(CaaBakeError, match=rf"emulated on this CPU .*{ALLOW_EMULATED_ENV}=1"):
        resolve_dtype(name, "cpu")
    monkeypatch.setenv(ALLOW_EMULATED_ENV, "1")
    assert resolve_dtype(name, "cpu") == parse_dtype(name)


@pytest.mark.skipif(NATIVE_BF16, reason="this CPU runs bf16 natively")
def test_cli_refuses_emulated_bf16_with_one_line(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    env = {"CAA_BAKE_HOME": str(tmp_path / "ws"), ALLOW_EMULATED_ENV: "0"}
    model = str(tiny_models["llama"])
    proc = run_cli("extract", "--behavior", "refusal", "--model", model, "--dtype", "bf16", env=env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bfloat16 is emulated on this CPU")
    assert not (tmp_path / "ws" / "vectors").exists()


def test_bad_dtypes_fail_before_any_work(tiny_models: dict[str, Path]) -> None:
    from caa_bake.evaluation.evaluate import EvalJob, run_eval_job
    from caa_bake.evaluation.sweep import SweepJob, run_sweep_job
    from caa_bake.finetune.plan import FinetuneRequest, plan_finetune

    model = str(tiny_models["llama"])
    with pytest.raises(CaaBakeError, match="unknown dtype 'int4'"):
        run_eval_job(EvalJob(["refusal"], 1, [1.0], model=model, dtype="int4"), status=print)
    with pytest.raises(CaaBakeError, match="unknown dtype 'int4'"):
        run_sweep_job(SweepJob(["refusal"], model=model, dtype="int4"), status=print)
    request = FinetuneRequest("refusal", "pos", model=model, dtype="bf16")
    with pytest.raises(CaaBakeError, match=r"float32 only: with bfloat16 weights .* round away"):
        plan_finetune(request)


def test_cli_verify_compares_in_an_explicit_dtype(tiny_models: dict[str, Path]) -> None:
    proc = run_cli("verify", str(tiny_models["llama"]), "--dtype", "auto")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: verification compares in an explicit dtype: use --dtype float32"
    ]


def _vectors(model_dir: Path, dtype: torch.dtype) -> dict[int, torch.Tensor]:
    model, tok = load_model(resolve_model(str(model_dir)), dtype=dtype)
    return extract_vectors(model, tok, PAIRS, [0, 1, 2], batch_size=4).vectors


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_bf16_extraction_agrees_with_fp32(
    contrast_models: dict[str, Path], arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ALLOW_EMULATED_ENV, "1")
    ref = _vectors(contrast_models[arch], resolve_dtype("fp32"))
    half = _vectors(contrast_models[arch], resolve_dtype("bf16"))
    for layer, vector in ref.items():
        assert half[layer].dtype == torch.float32  # saved vectors are float32 in any case
        assert float(torch.cosine_similarity(vector, half[layer], dim=0)) > 0.99
        assert not torch.equal(vector, half[layer])  # bf16 really ran


def test_kv_cache_extraction_prints_no_future_warning(tiny_models: dict[str, Path]) -> None:
    """The shared-prefix KV cache goes in as ``cache=`` (transformers' past_key_values
    FutureWarning used to print in the middle of extraction progress bars)."""
    model, tok = load_model(resolve_model(str(tiny_models["llama"])))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        extract_vectors(model, tok, PAIRS, [1], batch_size=3, share_prefix=True)


def _extract(loader: ModelLoader, data: BehaviorData, layers: list[int]) -> SteeringVector:
    vector, path = extract_behavior(loader, data, layers, batch_size=4)
    assert SteeringVector.load(path).metadata == vector.metadata
    return vector


def test_vector_metadata_records_the_dtype_and_the_cache_keys_on_it(
    contrast_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAA_BAKE_VECTORS_DIR", str(tmp_path / "vectors"))
    monkeypatch.setenv("CAA_BAKE_QUIET", "1")
    monkeypatch.setenv(ALLOW_EMULATED_ENV, "1")
    data_file = tmp_path / "t.json"
    data_file.write_text("[]")
    data = BehaviorData("t", PAIRS, data_file, file_sha256(data_file))
    ref = resolve_model(str(contrast_models["llama"]))
    fp32_loader = ModelLoader(ref, dtype=resolve_dtype("auto"))
    bf16_loader = ModelLoader(ref, dtype=resolve_dtype("bf16"))

    fp32 = _extract(fp32_loader, data, [0, 1])
    assert fp32.metadata["dtype"] == "float32"
    # same dtype: reused; only the new layer is extracted, the others are kept as they are
    more = _extract(fp32_loader, data, [2])
    assert more.layer_ids == [0, 1, 2] and torch.equal(more[0], fp32[0])
    # another dtype: not reused; every layer of the file re-extracted in bf16
    half = _extract(bf16_loader, data, [1])
    assert half.metadata["dtype"] == "bfloat16"
    assert half.layer_ids == [0, 1, 2]
    for layer in half.layer_ids:
        assert not torch.equal(half[layer], more[layer])
        assert float(torch.cosine_similarity(half[layer], more[layer], dim=0)) > 0.99
    # and back: a bf16 file does not serve a float32 request
    again = _extract(fp32_loader, data, [1])
    assert again.metadata["dtype"] == "float32"
    assert torch.equal(again[1], fp32[1])


def test_cli_extract_records_the_dtype(contrast_models: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "t.json"
    rows = [
        {
            "question": p.question,
            "answer_matching_behavior": p.matching,
            "answer_not_matching_behavior": p.not_matching,
        }
        for p in PAIRS
    ]
    data.write_text(json.dumps(rows))
    env = {"CAA_BAKE_HOME": str(tmp_path / "ws"), "CAA_BAKE_QUIET": "1", ALLOW_EMULATED_ENV: "1"}
    model = str(contrast_models["llama"])
    proc = run_cli(
        "extract",
        "--dataset",
        str(data),
        "--model",
        model,
        "--layers",
        "1",
        "--dtype",
        "bf16",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = SteeringVector.load(tmp_path / "ws" / "vectors" / "llama" / "t.safetensors")
    assert saved.metadata["dtype"] == "bfloat16"
