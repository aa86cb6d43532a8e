"""``caa-bake eval``: reference-position hooks, the whole run on a tiny model, bad input.

The end-to-end run uses cached random vectors (large, so steering visibly moves p_match)
and a fake finetuned checkpoint; every steered number is then recomputed independently:
baked = the source model steered at every position through lm-eval; hooks and combined
(an export of the finetuned checkpoint with the base vector) = batch-1 forward passes by
hand with :func:`caa_bake.steering.hooks.add_to_block_outputs`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import run_cli
from transformers import AutoModelForCausalLM, AutoTokenizer
from workspaces import cached_workspace

from caa_bake.bake.bakes import Bake
from caa_bake.core.errors import CaaBakeError
from caa_bake.data.datasets import load_pairs
from caa_bake.evaluation.common import make_lm
from caa_bake.evaluation.evaluate import run_eval_job
from caa_bake.evaluation.tasks import prompt_setup, run_tasks
from caa_bake.evaluation.variants import EvalJob, ensure_export
from caa_bake.models.loading import resolve_model
from caa_bake.models.prompts import encode_prompt
from caa_bake.steering.hooks import add_to_block_outputs
from caa_bake.steering.vector import SteeringVector

LAYER = 1
TOL = 1e-5


def _quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def tiny(tiny_models: dict[str, Path]) -> tuple[Any, Any]:
    path = tiny_models["llama"]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


# --------------------------------------------------------------------------- the whole run


def _fake_finetune(source: Path, target: Path, ref: Any) -> Path:
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(1.5)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    config = json.loads((target / "config.json").read_text())
    config["caa_bake"] = {
        "kind": "finetune",
        "behavior": "refusal",
        "direction": "pos",
        "base": {"model_id": ref.model_id, "weights_fingerprint": ref.weights_fingerprint},
        "hyperparameters": {"lora": None},
    }
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.fixture(scope="module")
def workspace(
    tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path], pulled_datasets: Path
) -> dict[str, str]:
    """A workspace with cached vectors and a fake finetuned refusal checkpoint."""
    ws = tmp_path_factory.mktemp("eval-ws")
    env = cached_workspace(ws, tiny_models["llama"], pulled_datasets)
    ref = resolve_model(str(tiny_models["llama"]))
    _fake_finetune(tiny_models["llama"], ws / "exported_models" / "llama-ft-refusal-pos", ref)
    return env


@pytest.fixture(scope="module")
def eval_run(tiny_models: dict[str, Path], workspace: dict[str, str]) -> Path:
    proc = run_cli(
        "eval",
        "--model",
        str(tiny_models["llama"]),
        "--behavior",
        "refusal",
        "--layer",
        str(LAYER),
        "--mults=-1,0,1",
        "--tasks",
        "ab,mmlu",
        "--limit",
        "3",
        "--batch-size",
        "4",
        "--run",
        "e2e",
        env=workspace,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "### p_match" in proc.stdout
    return Path(workspace["CAA_BAKE_RESULTS_DIR"]) / "e2e"


def _samples(folder: Path, kind: str, mult: float, task: str) -> list[dict[str, Any]]:
    lines = (folder / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    return [r for r in rows if r["kind"] == kind and r["multiplier"] == mult and r["task"] == task]


def _hand_p_match(model: Any, tok: Any, question: str, target: str) -> float:
    """p(target) / (p(A) + p(B)) from one unpadded forward pass (hooks already in place)."""
    enc = encode_prompt(tok, question, "(")
    ids = {a: encode_prompt(tok, question, f"({a})") for a in "AB"}
    letters = {a: e.input_ids[e.answer_index] for a, e in ids.items()}
    with torch.no_grad():
        logits = model(torch.tensor([enc.input_ids])).logits[0, -1]
    probs = torch.softmax(logits.double(), dim=-1)
    p = {a: float(probs[t]) for a, t in letters.items()}
    return p.get(target, 0.0) / (p["A"] + p["B"])


def test_eval_run_files_and_provenance(eval_run: Path, workspace: dict[str, str]) -> None:
    names = {p.name for p in eval_run.iterdir()}
    expected = {"results.json", "results.csv", "samples.jsonl", "results.md"}
    assert expected | {"p_match.png", "mmlu.png"} <= names
    meta = json.loads((eval_run / "results.json").read_text())
    kinds = [(v["kind"], v["state"], v["multiplier"]) for v in meta["variants"]]
    assert kinds == [
        ("base", "none", 0.0),
        ("baked", "none", -1.0),
        ("hooks", "none", -1.0),
        ("baked", "none", 1.0),
        ("hooks", "none", 1.0),
        ("finetuned", "ft-pos", 0.0),
        ("combined", "ft-pos", -1.0),
        ("combined", "ft-pos", 1.0),
    ]
    vector = SteeringVector.load(
        Path(workspace["CAA_BAKE_VECTORS_DIR"]) / "llama" / "normalized" / "refusal.safetensors"
    )
    assert meta["vectors"]["refusal"]["sha256"] == vector.sha256(LAYER)
    baked = [v for v in meta["variants"] if v["kind"] == "baked"]
    for v in baked:
        assert v["vector_sha256"] == vector.sha256(LAYER)
        assert Path(v["model_path"]).parent == Path(workspace["CAA_BAKE_EXPORTS_DIR"])
        assert v["weights_fingerprint"] != meta["model"]["weights_fingerprint"]
        assert v["tasks"]["caa_ab_refusal"]["n"] == 3
    assert meta["model"]["prompt_style"] == "chat-template"
    assert meta["dtype"] == "float32"  # auto
    with (eval_run / "results.csv").open(encoding="utf-8") as fh:
        assert {row["dtype"] for row in csv.DictReader(fh)} == {"float32"}
    assert set(meta["dataset_sha256"]) == {"caa_ab_refusal", "caa_mmlu"}
    assert "finetuned: ft-pos" in (eval_run / "results.md").read_text()


def test_baked_equals_every_position_steering(
    eval_run: Path, tiny: tuple[Any, Any], workspace: dict[str, str]
) -> None:
    model, tok = tiny
    vector = SteeringVector.load(
        Path(workspace["CAA_BAKE_VECTORS_DIR"]) / "llama" / "normalized" / "refusal.safetensors"
    )
    setup = prompt_setup(tok, model.config)
    for mult in (-1.0, 1.0):
        with add_to_block_outputs(model, {LAYER: vector[LAYER] * mult}):
            ref = run_tasks(make_lm(model, tok, 2), ["caa_ab_refusal", "caa_mmlu"], setup, limit=3)
        for task in ("caa_ab_refusal", "caa_mmlu"):
            baked = _samples(eval_run, "baked", mult, task)
            assert [s["doc_id"] for s in baked] == [s.doc_id for s in ref[task].samples]
            for got, want in zip(baked, ref[task].samples, strict=True):
                assert got["value"] == pytest.approx(want.value, abs=TOL)
                assert got["p_a"] == pytest.approx(want.p_a, abs=TOL)
    base = _samples(eval_run, "base", 0.0, "caa_ab_refusal")
    steered = _samples(eval_run, "baked", 1.0, "caa_ab_refusal")
    assert max(abs(a["value"] - b["value"]) for a, b in zip(base, steered, strict=True)) > 1e-3


def test_hooks_and_combined_by_hand(
    eval_run: Path, tiny: tuple[Any, Any], workspace: dict[str, str]
) -> None:
    model, tok = tiny
    vector = SteeringVector.load(
        Path(workspace["CAA_BAKE_VECTORS_DIR"]) / "llama" / "normalized" / "refusal.safetensors"
    )
    pairs = load_pairs("refusal", "test")
    finetuned = AutoModelForCausalLM.from_pretrained(
        Path(workspace["CAA_BAKE_EXPORTS_DIR"]) / "llama-ft-refusal-pos", dtype=torch.float32
    ).eval()
    for mult in (-1.0, 1.0):
        delta = {LAYER: vector[LAYER] * mult}
        hooks = _samples(eval_run, "hooks", mult, "caa_ab_refusal")
        combined = _samples(eval_run, "combined", mult, "caa_ab_refusal")
        assert len(hooks) == len(combined) == 3
        for sample in hooks:
            pair = pairs[sample["doc_id"]]
            start = encode_prompt(tok, pair.question, "(").instruction_end_index
            with add_to_block_outputs(model, delta, start=start):
                want = _hand_p_match(model, tok, pair.question, pair.matching[1])
            assert sample["value"] == pytest.approx(want, abs=TOL)
        for sample in combined:
            pair = pairs[sample["doc_id"]]
            with add_to_block_outputs(finetuned, delta):
                want = _hand_p_match(finetuned, tok, pair.question, pair.matching[1])
            assert sample["value"] == pytest.approx(want, abs=TOL)


def test_eval_resume_reuses_finished_variants(
    eval_run: Path, tiny_models: dict[str, Path], workspace: dict[str, str], monkeypatch: Any
) -> None:
    for key, value in workspace.items():
        monkeypatch.setenv(key, value)
    before = json.loads((eval_run / "results.json").read_text())
    messages: list[str] = []
    job = EvalJob(
        behaviors=["refusal"],
        layer=LAYER,
        multipliers=[-1.0, 0.0, 1.0],
        tasks="ab,mmlu",
        limit=3,
        model=str(tiny_models["llama"]),
        run="e2e",
        resume=True,
    )
    run = run_eval_job(job, status=messages.append)
    assert sum("finished before, reused" in m for m in messages) == 8
    after = json.loads((run.folder / "results.json").read_text())
    assert [v["tasks"] for v in after["variants"]] == [v["tasks"] for v in before["variants"]]


def test_existing_export_is_reused_or_refused(
    eval_run: Path, tiny_models: dict[str, Path], workspace: dict[str, str], monkeypatch: Any
) -> None:
    for key, value in workspace.items():
        monkeypatch.setenv(key, value)
    ref = resolve_model(str(tiny_models["llama"]))
    vector = SteeringVector.load(
        Path(workspace["CAA_BAKE_VECTORS_DIR"]) / "llama" / "normalized" / "refusal.safetensors"
    )
    folder, how = ensure_export(
        ref, Bake("refusal", LAYER, 1.0, vector), rebuild=False, status=_quiet
    )
    assert how == "reused"
    assert folder.name == f"llama-refusal-L{LAYER}-m1"
    with pytest.raises(CaaBakeError, match="--rebuild"):
        ensure_export(ref, Bake("refusal", LAYER, 1.0, vector * 2), rebuild=False, status=_quiet)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tasks": "ab,nope"}, "unknown task 'nope'"),
        ({"behaviors": ["refusl"]}, "unknown behavior 'refusl'"),
        ({"normalize_with": ("refusal", "nope")}, "unknown behavior 'nope'"),
        ({"limit": 0}, "--limit must be a positive"),
        ({"limit": -2}, "--limit must be a positive"),
        ({"model": "./no/such/model"}, "does not exist"),
        ({"layer": 99}, "out of range"),
        ({"kinds": ("baked", "steered")}, "unknown kind"),
    ],
)
def test_bad_input_is_one_clear_error(
    changes: dict[str, Any],
    message: str,
    tiny_models: dict[str, Path],
    workspace: dict[str, str],
    monkeypatch: Any,
) -> None:
    for key, value in workspace.items():
        monkeypatch.setenv(key, value)
    fields: dict[str, Any] = {
        "behaviors": ["refusal"],
        "layer": LAYER,
        "multipliers": [-1.0, 1.0],
        "model": str(tiny_models["llama"]),
        "run": "never",
        **changes,
    }
    with pytest.raises(CaaBakeError, match=message):
        run_eval_job(EvalJob(**fields), status=_quiet)
    assert not (Path(workspace["CAA_BAKE_RESULTS_DIR"]) / "never").exists()


def test_missing_datasets_error(
    tmp_path: Path, workspace: dict[str, str], monkeypatch: Any
) -> None:
    for key, value in workspace.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CAA_BAKE_DATASETS_DIR", str(tmp_path / "empty"))
    job = EvalJob(behaviors=["refusal"], layer=LAYER, multipliers=[1.0])
    with pytest.raises(CaaBakeError, match="datasets pull"):
        run_eval_job(job, status=_quiet)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "-b", "refusal", "-l", "1", "--limit", "0"], "--limit must be a positive"),
        (["eval", "-b", "refusal", "-l", "1", "--tasks", "caa_nope"], "unknown task"),
        (["sweep", "-b", "refusal", "--model", "./missing-model"], "does not exist"),
    ],
)
def test_cli_bad_input_one_line(
    args: list[str], message: str, workspace: dict[str, str], tmp_path: Path
) -> None:
    proc = run_cli(*args, env=workspace, cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr


def test_vector_dtype_uses_vectors_cached_in_another_dtype(
    tmp_path: Path, tiny_models: dict[str, Path], pulled_datasets: Path, monkeypatch: Any
) -> None:
    """``--vector-dtype bfloat16`` evaluates in float32 with vectors a bf16 run cached (as a
    GPU run leaves them), instead of re-extracting them in float32; the files stay as they are
    and the results record the vectors' dtype."""
    env = cached_workspace(tmp_path, tiny_models["llama"], pulled_datasets)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ref = resolve_model(str(tiny_models["llama"]))
    folder = tmp_path / "vectors" / ref.slug
    for path in folder.glob("*.safetensors"):
        cached = SteeringVector.load(path)
        SteeringVector(
            {layer: cached[layer] for layer in cached.layer_ids},
            {**cached.metadata, "dtype": "bfloat16"},
        ).save(path)
    before = {p.name: p.read_bytes() for p in folder.glob("*.safetensors")}
    job = EvalJob(
        behaviors=["refusal"],
        layer=LAYER,
        multipliers=[1.0],
        tasks="ab",
        limit=2,
        model=str(tiny_models["llama"]),
        kinds=("hooks",),
        discover_finetuned=False,
        vector_dtype="bf16",
        run="vector-dtype",
    )
    run = run_eval_job(job, status=_quiet)
    meta = json.loads((run.folder / "results.json").read_text())
    assert meta["dtype"] == "float32"
    assert meta["vectors"]["refusal"]["dtype"] == "bfloat16"
    assert {p.name: p.read_bytes() for p in folder.glob("*.safetensors")} == before
    with pytest.raises(CaaBakeError, match="--vector-dtype must name a dtype"):
        run_eval_job(replace(job, vector_dtype="auto", run="never"), status=_quiet)
