"""The run folder of ``caa-bake analyze``: checked names, all-or-nothing writes, provenance."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from cli_runner import files_under, workspace

from caa_bake.analysis.run import (
    check_layers_in,
    load_vector,
    provenance,
    run_target,
    vector_record,
    write_csv_rows,
    writing_run,
)
from caa_bake.core import CaaBakeError, file_sha256
from caa_bake.models.loading import resolve_model
from caa_bake.steering.vector import SteeringVector


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key, value in workspace(tmp_path / "ws").items():
        monkeypatch.setenv(key, value)
    return tmp_path / "ws"


def test_run_target_names_and_existing_folders(ws: Path) -> None:
    assert run_target(None, "pca", "m", force=False).name.startswith("pca-m-")
    with pytest.raises(CaaBakeError, match=r"run name '\.\./x' must use letters"):
        run_target("../x", "pca", "m", force=False)
    (ws / "results" / "empty").mkdir(parents=True)
    assert run_target("empty", "pca", "m", force=False) == ws / "results" / "empty"
    (ws / "results" / "full").mkdir()
    (ws / "results" / "full" / "a.csv").write_text("x")
    with pytest.raises(CaaBakeError, match="already holds results"):
        run_target("full", "pca", "m", force=False)
    assert run_target("full", "pca", "m", force=True).name == "full"


def test_writing_run_is_all_or_nothing(ws: Path) -> None:
    target = ws / "results" / "r"
    with pytest.raises(RuntimeError), writing_run(target, force=False) as tmp:
        (tmp / "half.csv").write_text("x")
        raise RuntimeError("killed half-way")
    assert files_under(ws / "results") == []  # no target, no temporary
    with writing_run(target, force=False) as tmp:
        write_csv_rows(tmp / "a.csv", [{"x": 1, "y": "b"}, {"x": 2, "y": "c"}])
    assert list(csv.DictReader((target / "a.csv").open())) == [
        {"x": "1", "y": "b"}, {"x": "2", "y": "c"}
    ]  # fmt: skip
    with writing_run(target, force=True) as tmp:
        (tmp / "b.csv").write_text("new")
    assert files_under(ws / "results") == ["r", "r/b.csv"]


def test_vectors_and_provenance(ws: Path, tiny_models: dict[str, Path]) -> None:
    ref = resolve_model(str(tiny_models["llama"]))
    with pytest.raises(CaaBakeError, match=r"no vector of 'refusal' for model .*caa-bake extract"):
        load_vector(ref, "refusal")
    path = ws / "vectors" / ref.slug / "refusal.safetensors"
    meta = {"weights_fingerprint": "other", "behavior": "refusal", "dtype": "float32"}
    SteeringVector({3: torch.ones(32)}, meta).save(path)
    with pytest.raises(CaaBakeError, match="was extracted from other weights"):
        load_vector(ref, "refusal")
    meta["weights_fingerprint"] = ref.weights_fingerprint
    SteeringVector({3: torch.ones(32)}, meta).save(path)
    vector, found = load_vector(ref, "refusal")
    record = vector_record(vector, found, [3])
    assert record["file_sha256"] == file_sha256(path)
    assert record["layer_sha256"] == {"3": vector.sha256(3)}
    assert record["normalization"] == "none"
    with pytest.raises(CaaBakeError, match=r"the file has no layer 1, 2 \(it has: 3\); fix it"):
        check_layers_in("the file", vector.layer_ids, [1, 2, 3], "fix it")
    info = provenance(ref, extra=1)
    assert info["model"]["weights_fingerprint"] == ref.weights_fingerprint
    assert info["extra"] == 1 and info["command"].startswith("caa-bake")
