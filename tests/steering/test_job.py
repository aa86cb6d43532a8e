"""``caa-bake extract`` end to end on a tiny model, and its bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from transformers import AutoModelForCausalLM, AutoTokenizer

from caa_bake.steering.cache import BehaviorData
from caa_bake.steering.extract import extract_vectors
from caa_bake.steering.vector import SteeringVector

PAIRS = [
    {
        "question": f"Question {i}: would you?\n\nChoices:\n(A) Yes.\n(B) No.",
        "answer_matching_behavior": "(A)" if i % 2 else "(B)",
        "answer_not_matching_behavior": "(B)" if i % 2 else "(A)",
    }
    for i in range(6)
]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture
def workspace(tmp_path: Path) -> dict[str, str]:
    """An empty workspace; every output folder pinned inside it (overriding session env)."""
    ws = tmp_path / "ws"
    return {
        "CAA_BAKE_HOME": str(ws),
        "CAA_BAKE_DATASETS_DIR": str(ws / "datasets"),
        "CAA_BAKE_VECTORS_DIR": str(ws / "vectors"),
        "CAA_BAKE_EXPORTS_DIR": str(ws / "exported_models"),
        "CAA_BAKE_QUIET": "1",
    }


def test_custom_dataset_extract_writes_vector_with_metadata(
    tiny_models: dict[str, Path], workspace: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "honesty.json"
    data.write_text(json.dumps(PAIRS))
    model_dir = tiny_models["llama"]
    proc = run_cli(
        "extract",
        "--dataset",
        str(data),
        "--model",
        str(model_dir),
        "--layers",
        "1-2",
        "--batch-size",
        "4",
        env=workspace,
    )
    assert proc.returncode == 0, proc.stderr
    out = Path(workspace["CAA_BAKE_HOME"]) / "vectors" / "llama" / "honesty.safetensors"
    assert str(out) in proc.stdout
    vec = SteeringVector.load(out)
    assert vec.layer_ids == [1, 2]
    meta = vec.metadata
    assert meta["behavior"] == "honesty" and meta["num_pairs"] == "6"
    assert meta["dataset_sha256"] == BehaviorData.resolve(None, data).sha256
    assert meta["model_id"] and meta["weights_fingerprint"] and meta["tool"].startswith("caa-bake")
    assert "answer letter" in meta["position_rule"]
    # the saved vector is the library's extraction of the same pairs
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    pairs = BehaviorData.resolve(None, data).pairs
    want = extract_vectors(model, tok, pairs, [1, 2], batch_size=1)
    for layer in (1, 2):
        assert torch.allclose(vec[layer], want.vectors[layer], atol=1e-6)

    # a second run with more layers reuses the cache and merges the new layer in
    again = run_cli(
        "extract",
        "--dataset",
        str(data),
        "--model",
        str(model_dir),
        "--layers",
        "0-2",
        env=workspace,
    )
    assert again.returncode == 0, again.stderr
    merged = SteeringVector.load(out)
    assert merged.layer_ids == [0, 1, 2]
    assert torch.equal(merged[1], vec[1])


def _assert_one_line_error(proc, pattern: str) -> None:  # type: ignore[no-untyped-def]
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    import re

    assert re.search(pattern, lines[0]), lines[0]


def test_unknown_behavior_lists_valid_ones(workspace: dict[str, str]) -> None:
    proc = run_cli("extract", "--behavior", "nonsense", env=workspace)
    _assert_one_line_error(proc, r"unknown behavior 'nonsense'.*refusal")
    assert _tree(Path(workspace["CAA_BAKE_HOME"])) == []


def test_datasets_not_pulled_says_how(workspace: dict[str, str]) -> None:
    proc = run_cli("extract", "--behavior", "refusal", env=workspace)
    _assert_one_line_error(proc, r"caa-bake datasets pull")


def test_layer_out_of_range_states_layer_count(
    tiny_models: dict[str, Path], workspace: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(p) for p in PAIRS))
    proc = run_cli(
        "extract",
        "--dataset",
        str(data),
        "--model",
        str(tiny_models["gpt2"]),
        "--layers",
        "9",
        env=workspace,
    )
    _assert_one_line_error(proc, r"layer 9 is out of range: the model has 4 layers")
    assert _tree(Path(workspace["CAA_BAKE_HOME"])) == []


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("[]", r"empty"),
        ("{not json", r"bad\.json"),
        (json.dumps([{"question": "q"}]), r"bad\.json.*item 0"),
    ],
)
def test_empty_or_malformed_dataset_names_file(
    tiny_models: dict[str, Path],
    workspace: dict[str, str],
    tmp_path: Path,
    content: str,
    pattern: str,
) -> None:
    data = tmp_path / "bad.json"
    data.write_text(content)
    proc = run_cli(
        "extract", "--dataset", str(data), "--model", str(tiny_models["llama"]), env=workspace
    )
    _assert_one_line_error(proc, pattern)
    assert _tree(Path(workspace["CAA_BAKE_HOME"])) == []


def test_model_dir_without_safetensors(workspace: dict[str, str], tmp_path: Path) -> None:
    model_dir = tmp_path / "pickle-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (model_dir / "pytorch_model.bin").write_bytes(b"\x80\x04")
    data = tmp_path / "d.json"
    data.write_text(json.dumps(PAIRS))
    proc = run_cli("extract", "--dataset", str(data), "--model", str(model_dir), env=workspace)
    _assert_one_line_error(proc, r"safetensors|pickle")
    assert _tree(Path(workspace["CAA_BAKE_HOME"])) == []
