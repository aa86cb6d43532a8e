"""``analyze project``: per-token projections recomputed by hand through
``output_hidden_states`` (1e-5), a baked model's shift, the HTML page and the errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from analysis_workspace import fill
from cli_runner import assert_one_error, files_under, run_in_process
from tiny_models import build_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from caa_bake.analysis.project import projection_html, token_projections
from caa_bake.bake import Bake, export_checkpoint
from caa_bake.models.loading import resolve_model
from caa_bake.steering.vector import SteeringVector

PROMPT = "Can you help me with illegal activities?"


def _hand(model_dir: Path, layer: int, direction: torch.Tensor) -> tuple[list[int], list[float]]:
    """hidden_states[layer + 1] (= block ``layer``'s output, not the last block) · unit."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    text = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False
    )
    ids = tok(text, add_special_tokens=False).input_ids
    with torch.no_grad():
        hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[layer + 1]
    unit = direction / direction.norm()
    return ids, [float(h @ unit) for h in hidden[0]]


@pytest.mark.parametrize("layer", [0, 2])
def test_token_projections_match_output_hidden_states(
    tiny_models: dict[str, Path], layer: int
) -> None:
    model_dir = tiny_models["llama"]
    direction = torch.randn(32, generator=torch.Generator().manual_seed(layer))
    ids, expected = _hand(model_dir, layer, direction)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    got = token_projections(model, ids, layer, direction)
    assert got.shape == (len(ids),)
    assert max(abs(float(a) - b) for a, b in zip(got, expected, strict=True)) < 1e-5


def test_project_run_base_and_baked(
    tiny_models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_models["llama"]
    ws = tmp_path / "ws"
    env = fill(ws, model)
    ref = resolve_model(str(model))
    vector = SteeringVector.load(ws / "vectors" / ref.slug / "refusal.safetensors")
    baked = export_checkpoint(ref, [Bake("refusal", 1, 2.0, vector)], tmp_path / "baked").path
    args = ["analyze", "project", "--model", str(model), "-b", "refusal", "--layer", "1"]
    args += ["--prompt", PROMPT, "--baked", str(baked), "--run", "pr"]
    code, out, err = run_in_process(*args, capsys=capsys, monkeypatch=monkeypatch, env=env)
    assert code == 0, err
    folder = ws / "results" / "pr"
    assert sorted(p.name for p in folder.iterdir()) == [
        "project.csv", "project.html", "project.json", "project.png"
    ]  # fmt: skip
    rows = list(csv.DictReader((folder / "project.csv").open()))
    base = [float(r["projection"]) for r in rows if r["model"] == "base"]
    steered = [float(r["projection"]) for r in rows if r["model"] == "baked"]
    ids, expected = _hand(model, 1, vector[1])
    assert [int(r["token_id"]) for r in rows if r["model"] == "base"] == ids
    assert max(abs(a - b) for a, b in zip(base, expected, strict=True)) < 1e-5
    # the bias at the projected layer adds 2 * v, i.e. 2 * |v| along the unit vector, everywhere
    shift = 2.0 * float(vector[1].norm())
    assert max(abs(s - b - shift) for s, b in zip(steered, base, strict=True)) < 1e-4
    meta = json.loads((folder / "project.json").read_text())
    assert meta["token_ids"] == ids
    assert meta["vector"]["layer_sha256"] == {"1": vector.sha256(1)}
    assert meta["models"]["baked"]["caa_bake"]["bakes"][0]["multiplier"] == 2.0
    page = (folder / "project.html").read_text()
    assert page.count("<span") == 2 * len(ids) and "<h4>baked</h4>" in page
    assert "base: mean projection" in out


def test_projection_html_escapes_and_scales() -> None:
    page = projection_html("t <x>", ["<s>", "a&b", "\n"], {"m": [100.0, -2.0, 1.0]})
    assert "&lt;s&gt;" in page and "a&amp;b" in page and "t &lt;x&gt;" in page
    assert "rgba(40,90,220,1.000)" in page  # -2 is the largest after the first token
    assert "rgba(220,40,40,0.500)" in page and "full colour at |projection| = 2" in page


def test_project_bad_input(
    tiny_models: dict[str, Path],
    tmp_path: Path,
    pulled_datasets: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_models["llama"]
    ws = tmp_path / "ws"
    env = {**fill(ws, model, layers=(0, 1)), "CAA_BAKE_DATASETS_DIR": str(pulled_datasets)}
    wide = build_model("llama", tmp_path / "wide", hidden_size=48)
    before = files_under(ws)

    def run(*extra: str) -> tuple[int, str, str]:
        args = ("analyze", "project", "--model", str(model), "-b", "refusal", *extra)
        return run_in_process(*args, capsys=capsys, monkeypatch=monkeypatch, env=env)

    assert_one_error(run("--layer", "1"), "give the text to project: --prompt TEXT or --item N")
    assert_one_error(run("--layer", "1", "--prompt", "x", "--item", "0"), "(not both)")
    assert_one_error(run("--layer", "1", "--item", "50"), "--item 50 is out of range")
    assert_one_error(run("--layer", "7", "--prompt", "x"), "layer 7 is out of range")
    assert_one_error(
        run("--layer", "2", "--prompt", "x"),
        "has no layer 2 (it has: 0, 1); extract it with `caa-bake extract --behavior refusal",
    )
    assert_one_error(
        run("--layer", "1", "--prompt", "x", "--baked", str(wide)),
        "has hidden size 48",
    )
    assert_one_error(
        run("--layer", "1", "--prompt", "x", "-b", "survival-instinct"),
        "no vector of 'survival-instinct' for model",
    )
    assert files_under(ws) == before
    code, _, err = run("--layer", "0", "--item", "3", "--answer", "(A)", "--run", "item")
    assert code == 0, err
    meta = json.loads((ws / "results/item/project.json").read_text())
    assert meta["prompt"]["item"] == 3 and meta["prompt"]["answer_prefix"] == "(A)"
