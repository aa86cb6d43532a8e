"""``caa-bake sweep`` on a tiny model: every point re-checked by hand, files, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from workspaces import cached_workspace

from caa_bake.core.errors import CaaBakeError
from caa_bake.data.datasets import load_pairs
from caa_bake.evaluation.sweep import SweepJob, SweepRun, run_sweep_job
from caa_bake.evaluation.tables import best_layers
from caa_bake.models.prompts import encode_prompt
from caa_bake.steering.hooks import add_to_block_outputs
from caa_bake.steering.vector import SteeringVector

TOL = 1e-5
LIMIT = 2


def _quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path], pulled_datasets: Path
) -> dict[str, str]:
    return cached_workspace(
        tmp_path_factory.mktemp("sweep-ws"), tiny_models["llama"], pulled_datasets
    )


def _run(env: dict[str, str], tiny_models: dict[str, Path], **fields: Any) -> SweepRun:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        defaults: dict[str, Any] = {"model": str(tiny_models["llama"]), "limit": LIMIT}
        job = SweepJob(**{**defaults, "batch_size": 4, **fields})
        return run_sweep_job(job, status=_quiet)


def _hand_p_match(model: Any, tok: Any, behavior: str) -> float:
    """Mean p_match over the first LIMIT items, one unpadded forward pass each."""
    values = []
    for pair in load_pairs(behavior, "test")[:LIMIT]:
        enc = encode_prompt(tok, pair.question, "(")
        letters = [encode_prompt(tok, pair.question, f"({a})") for a in "AB"]
        ids = [e.input_ids[e.answer_index] for e in letters]
        with torch.no_grad():
            probs = torch.softmax(model(torch.tensor([enc.input_ids])).logits[0, -1].double(), -1)
        p = {"A": float(probs[ids[0]]), "B": float(probs[ids[1]])}
        values.append(p.get(pair.matching[1], 0.0) / (p["A"] + p["B"]))
    return sum(values) / len(values)


def test_sweep_points_files_and_best_layer(
    env: dict[str, str], tiny_models: dict[str, Path]
) -> None:
    run = _run(env, tiny_models, behaviors=["refusal", "sycophancy"], layers="0,2", run="sw")
    assert [(p.behavior, p.layer, p.multiplier) for p in run.points] == [
        (b, layer, m) for b in ("refusal", "sycophancy") for layer in (0, 2) for m in (-1.0, 1.0)
    ]
    for p in run.points:
        assert p.delta == p.p_match - run.base[p.behavior]
        assert p.n == LIMIT
    assert run.best == best_layers(run.points)
    assert {f.name for f in run.files} == {"sweep.json", "sweep.csv", "sweep.md", "sweep.png"}
    saved = json.loads((run.folder / "sweep.json").read_text())
    assert saved["best_layer"] == {k: v for k, v in run.best.items()}
    assert saved["positions"] == "all"
    assert saved["dtype"] == "float32"  # auto
    assert {p["dtype"] for p in saved["points"]} == {"float32"}
    assert f"all behaviors together: **{run.best['all']}**" in (run.folder / "sweep.md").read_text()

    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    vectors_dir = Path(env["CAA_BAKE_VECTORS_DIR"]) / "llama" / "normalized"
    base = _hand_p_match(model, tok, "refusal")
    assert run.base["refusal"] == pytest.approx(base, abs=TOL)
    vector = SteeringVector.load(vectors_dir / "refusal.safetensors")
    for point in run.points[:4]:
        delta = {point.layer: vector[point.layer] * point.multiplier}
        with add_to_block_outputs(model, delta):
            assert point.p_match == pytest.approx(_hand_p_match(model, tok, "refusal"), abs=TOL)
    assert max(abs(p.delta) for p in run.points) > 1e-3


def test_sweep_resumes_after_an_interruption(
    env: dict[str, str], tiny_models: dict[str, Path]
) -> None:
    fields: dict[str, Any] = {"behaviors": ["sycophancy"], "layers": "1,3", "run": "resumable"}
    first = _run(env, tiny_models, **fields)
    log = first.folder / "sweep.partial.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 + 4  # the unsteered value and 4 points
    log.write_text("\n".join(lines[:3]) + '\n{"key": {"unit": "po', encoding="utf-8")  # cut short
    messages: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        job = SweepJob(model=str(tiny_models["llama"]), limit=LIMIT, resume=True, **fields)
        second = run_sweep_job(job, status=messages.append)
    assert "resuming: 3 finished units found" in messages
    assert sum(m.startswith("[") for m in messages) == 2  # only the two lost points ran again
    assert second.base == first.base
    for a, b in zip(first.points, second.points, strict=True):
        assert (a.behavior, a.layer, a.multiplier) == (b.behavior, b.layer, b.multiplier)
        assert a.p_match == pytest.approx(b.p_match, abs=1e-9)
    with pytest.raises(CaaBakeError, match="--resume needs the --run"):
        _run(env, tiny_models, behaviors=["refusal"], layers="0", resume=True)


def test_sweep_reference_positions(env: dict[str, str], tiny_models: dict[str, Path]) -> None:
    run = _run(
        env,
        tiny_models,
        behaviors=["refusal"],
        layers="1",
        multipliers=[2.0],
        positions="reference",
    )
    (point,) = run.points
    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    vector = SteeringVector.load(
        Path(env["CAA_BAKE_VECTORS_DIR"]) / "llama" / "normalized" / "refusal.safetensors"
    )
    values = []
    for pair in load_pairs("refusal", "test")[:LIMIT]:
        enc = encode_prompt(tok, pair.question, "(")
        delta = {1: vector[1] * 2.0}
        with torch.no_grad(), add_to_block_outputs(model, delta, start=enc.instruction_end_index):
            logits = model(torch.tensor([enc.input_ids])).logits[0, -1]
        letters = [encode_prompt(tok, pair.question, f"({a})") for a in "AB"]
        probs = torch.softmax(logits.double(), -1)
        p = [float(probs[e.input_ids[e.answer_index]]) for e in letters]
        values.append(p["AB".index(pair.matching[1])] / sum(p))
    assert point.p_match == pytest.approx(sum(values) / len(values), abs=TOL)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"multipliers": [0.0]}, "non-zero multiplier"),
        ({"positions": "middle"}, "unknown --positions"),
        ({"layers": "3-1"}, "empty"),
        ({"limit": 0}, "--limit must be a positive"),
        ({"behaviors": []}, "name a behavior"),
        ({"vector_dtype": "auto"}, "--vector-dtype must name a dtype"),
    ],
)
def test_sweep_bad_input(
    fields: dict[str, Any], message: str, env: dict[str, str], tiny_models: dict[str, Path]
) -> None:
    job_fields = {"behaviors": ["refusal"], "layers": "0", "run": "bad", **fields}
    with pytest.raises(CaaBakeError, match=message):
        _run(env, tiny_models, **job_fields)
    assert not (Path(env["CAA_BAKE_RESULTS_DIR"]) / "bad").exists()
