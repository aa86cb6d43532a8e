"""Verification: reload from disk, compare with hook steering, lm-eval, failure detection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import build_model

from caa_bake.bake.bakes import Bake
from caa_bake.bake.export import BIAS_SHARD, VECTORS_FILE, export_checkpoint
from caa_bake.bake.inspection import baked_deltas, stored_deltas
from caa_bake.bake.safetensors_io import write_shard
from caa_bake.bake.verify import PROBES, TOLERANCE_FP32, TOLERANCES, verify_export
from caa_bake.core.errors import CaaBakeError
from caa_bake.models.loading import resolve_model
from caa_bake.steering.vector import SteeringVector

#: one probe, two greedy tokens: enough to see a failure, cheap
QUICK: dict[str, Any] = {"probes": PROBES[:1], "new_tokens": 2}


def _vector() -> SteeringVector:
    gen = torch.Generator().manual_seed(7)
    return SteeringVector({1: torch.randn(32, generator=gen), 2: torch.randn(32, generator=gen)})


def _export(tmp_path: Path, name: str, **options: object) -> Path:
    src = build_model("llama", tmp_path / f"{name}-src", **options)  # type: ignore[arg-type]
    bakes = [Bake("t", 1, 2.0, _vector()), Bake("u", 2, -1.0, _vector())]
    return export_checkpoint(resolve_model(str(src)), bakes, tmp_path / name).path


@pytest.fixture(scope="module")
def llama_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("verify"), "llama-export")


def test_a_good_export_passes(llama_export: Path) -> None:
    report = verify_export(llama_export)
    assert report.ok
    assert report.load.ok
    assert report.load.model_class == "LlamaForCausalLM"
    assert report.max_dlogit <= TOLERANCE_FP32
    assert len(report.probes) == 3
    assert all(p.greedy_agree and len(p.greedy_baked) == 8 for p in report.probes)
    assert all(0 < p.instruction_end < p.prompt_tokens for p in report.probes)
    assert report.lm_eval is not None
    assert report.lm_eval.diff <= TOLERANCE_FP32
    assert report.lm_eval.continuation == "A)"
    lines = report.lines()
    assert lines[-1] == "verify: OK"
    assert any(line.startswith("max |Δlogit| baked vs hook at all positions: ") for line in lines)
    assert any(line.startswith("position caveat (information): ") for line in lines)
    assert any(line.startswith("lm-eval hf model: loglikelihood ") for line in lines)


def test_saved_vectors_rebuild_the_stored_biases_exactly(llama_export: Path) -> None:
    block = json.loads((llama_export / "config.json").read_text())["caa_bake"]
    exact, stored = baked_deltas(llama_export, block), stored_deltas(llama_export, block)
    assert sorted(exact) == sorted(stored) == [1, 2]
    assert torch.equal(exact[1], _vector()[1] * 2.0)
    for layer in exact:
        assert torch.equal(exact[layer], stored[layer])


def test_low_precision_exports_compare_with_the_stored_bias(tmp_path: Path) -> None:
    out = _export(tmp_path, "half", weights_dtype=torch.float16)
    report = verify_export(out, lm_eval=False, **QUICK)
    assert report.ok, report.lines()
    assert report.stored_dtype == "float16"
    assert report.notes and report.notes[0].startswith("bias rounding to float16: max |stored")


def test_a_wrong_bias_fails(tmp_path: Path) -> None:
    out = _export(tmp_path, "tampered")
    biases = load_file(str(out / BIAS_SHARD))
    biases["model.layers.1.mlp.down_proj.bias"] = biases["model.layers.1.mlp.down_proj.bias"] * 1.1
    (out / BIAS_SHARD).unlink()
    write_shard(out / BIAS_SHARD, biases)
    report = verify_export(out, lm_eval=False, **QUICK)
    assert report.load.ok
    assert report.max_dlogit > 10 * TOLERANCE_FP32
    assert not report.ok
    assert report.lines()[-1] == "verify: FAILED"


def test_a_missing_key_fails(tmp_path: Path) -> None:
    out = _export(tmp_path, "missing")
    dropped = "model.layers.0.mlp.gate_proj.bias"
    biases = load_file(str(out / BIAS_SHARD))
    del biases[dropped]
    (out / BIAS_SHARD).unlink()
    write_shard(out / BIAS_SHARD, biases)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    del index["weight_map"][dropped]
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    report = verify_export(out, lm_eval=False, **QUICK)
    assert list(report.load.missing) == [dropped]
    assert not report.ok
    assert f"missing ['{dropped}']" in report.lines()[2]


def test_a_tampered_vector_file_is_detected(tmp_path: Path) -> None:
    out = _export(tmp_path, "vectors")
    vectors = load_file(str(out / VECTORS_FILE))
    vectors["bake.0"] = vectors["bake.0"] + 1
    (out / VECTORS_FILE).unlink()
    write_shard(out / VECTORS_FILE, vectors)
    with pytest.raises(CaaBakeError, match="bake 0 vector does not match its recorded sha256"):
        verify_export(out, lm_eval=False, **QUICK)


def test_source_folder_lookup(tmp_path: Path, llama_export: Path) -> None:
    with pytest.raises(CaaBakeError, match=r"source model folder .* not found; pass --source"):
        verify_export(llama_export, source=tmp_path / "nowhere", lm_eval=False)
    with pytest.raises(CaaBakeError, match=r"has no config\.json"):
        verify_export(tmp_path / "nothing", lm_eval=False)
    source = json.loads((llama_export / "config.json").read_text())["caa_bake"]["source"]
    with pytest.raises(CaaBakeError, match="not a caa-bake export"):
        verify_export(Path(source["path"]), lm_eval=False)
    assert verify_export(llama_export, source=Path(source["path"]), lm_eval=False, **QUICK).ok


def test_verify_in_bfloat16_is_a_looser_check(
    llama_export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--dtype bf16``: both models run in bf16, judged with bf16's tolerance, and said so."""
    monkeypatch.setenv("CAA_BAKE_ALLOW_EMULATED_DTYPE", "1")
    report = verify_export(llama_export, lm_eval=False, dtype=torch.bfloat16, **QUICK)
    assert report.dtype == "bfloat16" and report.tolerance == TOLERANCES[torch.bfloat16]
    assert report.ok, report.lines()
    assert report.max_dlogit > 0.0  # the rounding differs between bias and hook
    assert any("compared in bfloat16" in line for line in report.lines())
    assert verify_export(llama_export, lm_eval=False, **QUICK).dtype == "float32"
