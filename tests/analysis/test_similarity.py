"""``analyze similarity``: cosines recomputed by hand from the vector files (1e-5)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from analysis_workspace import BEHAVIORS, fill
from cli_runner import assert_one_error, files_under, run_in_process
from tiny_models import build_model

from caa_bake.analysis.similarity import cosine_matrix
from caa_bake.core import CaaBakeError, file_sha256
from caa_bake.models.loading import resolve_model
from caa_bake.steering.vector import SteeringVector


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    dot = sum(float(x) * float(y) for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(float(x) ** 2 for x in a))
    nb = math.sqrt(sum(float(y) ** 2 for y in b))
    return dot / (na * nb)


def test_cosine_matrix_by_hand() -> None:
    rows = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    matrix = cosine_matrix(rows)
    for i in range(5):
        for j in range(5):
            assert abs(float(matrix[i, j]) - _cos(rows[i], rows[j])) < 1e-5
    assert float(cosine_matrix(torch.stack([rows[0], -3 * rows[0]]))[0, 1]) == pytest.approx(-1)
    with pytest.raises(CaaBakeError, match="a zero vector has no direction"):
        cosine_matrix(torch.stack([rows[0], torch.zeros(7)]))


def _vectors(ws: Path, model_dir: Path) -> dict[str, SteeringVector]:
    slug = resolve_model(str(model_dir)).slug
    return {b: SteeringVector.load(ws / "vectors" / slug / f"{b}.safetensors") for b in BEHAVIORS}


def test_similarity_run_matches_hand_computation(
    tiny_models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_models["llama"]
    ws = tmp_path / "ws"
    env = fill(ws, model)
    other = build_model("llama", tmp_path / "finetuned", seed=3)
    fill(ws, other, seed=50)
    args = ["analyze", "similarity", "--model", str(model), "--run", "sim"]
    args += [x for b in BEHAVIORS for x in ("-b", b)] + ["--compare-model", str(other)]
    code, out, err = run_in_process(*args, capsys=capsys, monkeypatch=monkeypatch, env=env)
    assert code == 0, err
    folder = ws / "results" / "sim"
    assert sorted(p.name for p in folder.iterdir()) == [
        "behaviors.png", "layers.png", "models.png", "similarity.csv", "similarity.json"
    ]  # fmt: skip
    assert "refusal: cos(neighbouring layers)" in out
    mine, theirs = _vectors(ws, model), _vectors(ws, other)
    rows = list(csv.DictReader((folder / "similarity.csv").open()))
    seen = {"layers": 0, "behaviors": 0, "models": 0}
    for row in rows:
        seen[row["view"]] += 1
        if row["view"] == "layers":
            v = mine[row["behavior"]]
            expected = _cos(v[int(row["row"])], v[int(row["column"])])
        elif row["view"] == "behaviors":
            assert row["layer"] == "2"  # the middle of layers 0-3
            expected = _cos(mine[row["row"]][2], mine[row["column"]][2])
        else:
            layer = int(row["layer"])
            expected = _cos(mine[row["behavior"]][layer], theirs[row["behavior"]][layer])
        assert abs(float(row["cosine"]) - expected) < 1e-5
    assert seen == {"layers": 3 * 16, "behaviors": 9, "models": 3 * 4}
    meta = json.loads((folder / "similarity.json").read_text())
    assert meta["command"].startswith("caa-bake analyze similarity --model")
    assert meta["model"]["weights_fingerprint"] == resolve_model(str(model)).weights_fingerprint
    vec_file = Path(meta["vectors"]["refusal"]["file"])
    assert meta["vectors"]["refusal"]["file_sha256"] == file_sha256(vec_file)
    assert meta["vectors"]["refusal"]["layer_sha256"]["1"] == mine["refusal"].sha256(1)
    other_ref = resolve_model(str(other))
    assert meta["compare_model"]["weights_fingerprint"] == other_ref.weights_fingerprint
    assert len(meta["across_behaviors"]["matrix"]) == 3


def test_similarity_bad_input(
    tiny_models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_models["llama"]
    ws = tmp_path / "ws"
    env = fill(ws, model, layers=(0, 1))
    wide = build_model("llama", tmp_path / "wide", hidden_size=48)
    before = files_under(ws)

    def run(*extra: str) -> tuple[int, str, str]:
        args = ("analyze", "similarity", "--model", str(model), "-b", "refusal", *extra)
        return run_in_process(*args, capsys=capsys, monkeypatch=monkeypatch, env=env)

    assert_one_error(
        run("--compare-model", str(wide)),
        "(hidden size 32) and",
    )
    assert_one_error(run("--compare-model", str(wide)), "(hidden size 48): models must share")
    assert_one_error(
        run("--layers", "0-2"),
        "has no layer 2 (it has: 0, 1); extract it with `caa-bake extract --behavior refusal",
    )
    assert_one_error(run("-b", "sycophancy", "--layer", "3"), "has no layer 3 (it has: 0, 1)")
    assert_one_error(run("-b", "no-such"), "unknown behavior")
    assert_one_error(run("--normalized"), "no normalized vector of 'refusal' for model")
    assert_one_error(run("--run", "a/b"), "run name 'a/b' must use letters")
    assert files_under(ws) == before  # nothing written
    assert run("--run", "once")[0] == 0
    assert_one_error(run("--run", "once"), "already holds results; pick another --run or pass")
    assert run("--run", "once", "--force")[0] == 0
