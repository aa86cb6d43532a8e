"""``analyze pca``: sign-normalized projections recomputed by hand (covariance eigenvectors
with numpy, 1e-5), the separation score, the run files and the bad-input errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from analysis_workspace import BEHAVIORS, LETTERS, fill
from cli_runner import assert_one_error, files_under, run_in_process

from caa_bake.analysis.pca import _within_letter, pca2, separation
from caa_bake.core import CaaBakeError
from caa_bake.models.loading import resolve_model
from caa_bake.steering.activations import ActivationSet


def _hand_pca(points: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Eigenvectors of the covariance matrix, largest loading made positive."""
    centred = points - points.mean(axis=0)
    cov = centred.T @ centred
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    comps = vectors[:, order[:2]].T
    for comp in comps:
        if comp[np.argmax(np.abs(comp))] < 0:
            comp *= -1
    return centred @ comps.T, [float(values[i] / values.sum()) for i in order[:2]]


def test_pca2_matches_the_covariance_eigenvectors() -> None:
    gen = torch.Generator().manual_seed(1)
    points = torch.randn(12, 6, generator=gen) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    result = pca2(points)
    coords, shares = _hand_pca(points.double().numpy())
    assert np.abs(result.coords.numpy() - coords).max() < 1e-5
    assert result.explained == pytest.approx(shares, abs=1e-5)
    flipped = pca2(-points)  # mirrored data: same components, mirrored coordinates
    assert torch.allclose(flipped.components, result.components, atol=1e-6)
    assert torch.allclose(flipped.coords, -result.coords, atol=1e-6)
    with pytest.raises(CaaBakeError, match="at least two points"):
        pca2(points[:1])


def test_separation_by_hand() -> None:
    coords = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 4.0]], dtype=torch.float64)
    labels = ["a", "a", "b", "b"]
    # centroids (1, 0) and (10, 2): distance sqrt(85); RMS spreads 1 and 2
    assert separation(coords, labels, "a", "b") == pytest.approx(85**0.5 / 1.5)
    assert np.isnan(separation(coords, labels, "a", "c"))
    both = torch.cat([coords, coords + 100.0])  # letter B: the same layout, far away
    sides = ["matching", "matching", "not matching", "not matching"] * 2
    letters = ["A"] * 4 + ["B"] * 4
    assert _within_letter(both, sides, letters) == pytest.approx(85**0.5 / 1.5)
    assert separation(both, letters, "A", "B") > 10


def test_pca_run_matches_hand_computation(
    tiny_models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_models["llama"]
    ws = tmp_path / "ws"
    env = fill(ws, model)
    args = ["analyze", "pca", "--model", str(model), "--layers", "1,3", "--run", "p"]
    args += [x for b in BEHAVIORS for x in ("-b", b)]
    code, out, err = run_in_process(*args, capsys=capsys, monkeypatch=monkeypatch, env=env)
    assert code == 0, err
    folder = ws / "results" / "p"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["pca.csv", "pca.json", "pca_scores.csv", "pca-behaviors.png"]
        + [f"pca-{b}.png" for b in BEHAVIORS]
    )
    assert "refusal L1: side separation" in out
    slug = resolve_model(str(model)).slug
    rows = list(csv.DictReader((folder / "pca.csv").open()))
    assert len(rows) == 3 * 2 * 2 * len(LETTERS)
    for behavior in BEHAVIORS:
        kept = ActivationSet.load(ws / "vectors" / slug / "activations" / f"{behavior}.safetensors")
        for layer in (1, 3):
            coords, _ = _hand_pca(kept[layer].reshape(-1, 32).double().numpy())
            mine = [r for r in rows if r["behavior"] == behavior and r["layer"] == str(layer)]
            got = np.array([[float(r["pc1"]), float(r["pc2"])] for r in mine])
            assert np.abs(got - coords).max() < 1e-5
            assert [r["side"] for r in mine[:2]] == ["matching", "not matching"]
            letters = [r["letter"] for r in mine[0::2]]
            assert "".join(letters) == LETTERS
            assert [r["letter"] for r in mine[1::2]] == ["B" if x == "A" else "A" for x in LETTERS]
    meta = json.loads((folder / "pca.json").read_text())
    for score in meta["scores"]:
        kept = ActivationSet.load(
            ws / "vectors" / slug / "activations" / f"{score['behavior']}.safetensors"
        )
        diffs = (kept[score["layer"]][:, 0] - kept[score["layer"]][:, 1]).numpy()
        agree = np.mean([float(d @ diffs.mean(axis=0)) > 0 for d in diffs])
        assert score["vector_agreement"] == pytest.approx(agree, abs=1e-6)
        acts = kept[score["layer"]].double().numpy()
        read_a = np.concatenate([acts[i, side] for i, m in enumerate(LETTERS)
                                 for side in (0, 1) if (m == "A") == (side == 0)])  # fmt: skip
        read_b = np.concatenate([acts[i, side] for i, m in enumerate(LETTERS)
                                 for side in (0, 1) if (m == "B") == (side == 0)])  # fmt: skip
        letter = read_a.reshape(-1, 32).mean(0) - read_b.reshape(-1, 32).mean(0)
        vec = diffs.mean(axis=0)
        cos = float(letter @ vec / np.linalg.norm(letter) / np.linalg.norm(vec))
        assert score["letter_cosine"] == pytest.approx(cos, abs=1e-5)
        assert score["matching_a_share"] == pytest.approx(LETTERS.count("A") / len(LETTERS))
    assert meta["layers"] == [1, 3]
    assert meta["activations"]["refusal"]["num_pairs"] == len(LETTERS)
    assert len(meta["scores"]) == 6
    assert meta["command"].startswith("caa-bake analyze pca")


def test_pca_bad_input(
    tiny_models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_models["llama"]
    ws = tmp_path / "ws"
    env = fill(ws, model, layers=(0, 2))
    before = files_under(ws)

    def run(*extra: str) -> tuple[int, str, str]:
        args = ("analyze", "pca", "--model", str(model), *extra)
        return run_in_process(*args, capsys=capsys, monkeypatch=monkeypatch, env=env)

    assert_one_error(
        run("-b", "survival-instinct"),
        "no kept activations of 'survival-instinct' for model",
    )
    assert_one_error(
        run("-b", "survival-instinct"),
        "run `caa-bake extract --behavior survival-instinct --layers all --keep-activations`",
    )
    assert_one_error(
        run("-b", "refusal", "--layers", "1"),
        "the kept activations of 'refusal' has no layer 1 (it has: 0, 2)",
    )
    assert_one_error(run("-b", "refusal", "--layers", "9"), "layer 9 is out of range")
    assert_one_error(run(), "name a behavior (--behavior B) or pass --all-behaviors")
    assert files_under(ws) == before
    code, _, _ = run("-b", "refusal", "--run", "default-layers")
    assert code == 0
    assert json.loads((ws / "results/default-layers/pca.json").read_text())["layers"] == [0, 2]


def test_center_letters_removes_each_letters_mean(
    tiny_models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_models["llama"]
    ws = tmp_path / "ws"
    env = fill(ws, model, layers=(2,))
    args = ["analyze", "pca", "--model", str(model), "-b", "refusal", "--center-letters"]
    code, _, err = run_in_process(
        *args, "--run", "c", capsys=capsys, monkeypatch=monkeypatch, env=env
    )
    assert code == 0, err
    slug = resolve_model(str(model)).slug
    kept = ActivationSet.load(ws / "vectors" / slug / "activations" / "refusal.safetensors")
    points = kept[2].reshape(-1, 32).double().numpy()
    letters = np.array([x for m in LETTERS for x in (m, "B" if m == "A" else "A")])
    for letter in "AB":
        points[letters == letter] -= points[letters == letter].mean(axis=0)
    coords, _ = _hand_pca(points)
    rows = list(csv.DictReader((ws / "results/c/pca.csv").open()))
    got = np.array([[float(r["pc1"]), float(r["pc2"])] for r in rows])
    assert np.abs(got - coords).max() < 1e-5
    assert json.loads((ws / "results/c/pca.json").read_text())["letters_centered"] is True
