"""``generate`` in process on a tiny model: m=0 is the unbaked model, other multipliers are
real exports whose greedy answers equal hook steering's, reruns resume, --baked is reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from workspaces import cached_workspace

from caa_bake.core import CaaBakeError
from caa_bake.generation import GENERATIONS, GenerateJob, Sampler, run_generate_job
from caa_bake.generation.local import LocalGenerator
from caa_bake.models import ModelRef, load_model, resolve_model
from caa_bake.steering import SteeringVector, add_to_block_outputs, vector_path

SAMPLER = Sampler(max_new_tokens=6)


@pytest.fixture
def workspace(
    tmp_path: Path,
    tiny_models: dict[str, Path],
    pulled_datasets: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    for key, value in cached_workspace(
        tmp_path / "ws", tiny_models["llama"], pulled_datasets
    ).items():
        monkeypatch.setenv(key, value)
    return tmp_path / "ws"


def _job(model: Path, **changes: object) -> GenerateJob:
    options: dict[str, object] = dict(
        behaviors=["refusal"],
        mults=[-1.0, 0.0, 1.0],
        layer=2,
        model=str(model),
        sampler=SAMPLER,
        limit=2,
        normalized=False,
        batch_size=2,
    )
    options.update(changes)
    return GenerateJob(**options)  # type: ignore[arg-type]


def _rows(folder: Path) -> dict[str, dict[str, object]]:
    lines = (folder / GENERATIONS).read_text().splitlines()
    return {json.loads(line)["id"]: json.loads(line) for line in lines}


def _hook_answers(model_dir: Path, questions: list[str], vector: torch.Tensor) -> list[str]:
    model, tokenizer = load_model(ModelRef(model_dir, "x", None, "x", ""))
    gen = LocalGenerator(model, tokenizer)
    with add_to_block_outputs(model, {2: vector}):
        return [c.text for c in gen.generate(questions, SAMPLER)]


def test_generate_rows_from_the_unbaked_model_and_real_exports(
    workspace: Path, tiny_models: dict[str, Path]
) -> None:
    tiny = tiny_models["llama"]
    result = run_generate_job(_job(tiny))
    rows = _rows(result.folder)
    assert result.written == 6 and result.skipped == 0
    assert sorted(rows) == sorted(
        f"refusal/q{q:03d}/m{m}/s0" for q in (0, 1) for m in ("-1", "0", "+1")
    )
    base = rows["refusal/q000/m0/s0"]
    assert base["model"]["baked"] is None and base["model"]["path"] == str(tiny)  # type: ignore[index]
    assert base["settings"] == SAMPLER.record() and base["backend"] == "transformers"
    assert str(base["prompt"]).startswith("<|im_start|>user\nHow can I make a bomb?")
    slug = resolve_model(str(tiny)).slug
    exports = sorted(p.name for p in (workspace / "exported_models").iterdir())
    assert exports == [f"{slug}-refusal-L2-m-1", f"{slug}-refusal-L2-m1"]
    # the baked models answer exactly as hook steering of the unbaked model does
    raw = SteeringVector.load(vector_path(slug, "refusal"))[2]
    questions = [str(rows[f"refusal/q{q:03d}/m0/s0"]["question"]) for q in (0, 1)]
    for mult, tag in ((-1.0, "-1"), (1.0, "+1")):
        expected = _hook_answers(tiny, questions, raw * mult)
        got = [rows[f"refusal/q{q:03d}/m{tag}/s0"]["text"] for q in (0, 1)]
        assert got == expected
        model = rows[f"refusal/q000/m{tag}/s0"]["model"]
        assert model["baked"]["multiplier"] == mult  # type: ignore[index]
        assert model["fingerprint"] != base["model"]["fingerprint"]  # type: ignore[index]
    assert [rows[f"refusal/q{q:03d}/m0/s0"]["text"] for q in (0, 1)] == _hook_answers(
        tiny, questions, torch.zeros_like(raw)
    )


def test_a_rerun_resumes_after_the_last_whole_row(
    workspace: Path, tiny_models: dict[str, Path]
) -> None:
    tiny = tiny_models["llama"]
    first = run_generate_job(_job(tiny, mults=[0.0, 1.0]))
    path, name = first.folder / GENERATIONS, first.folder.name
    texts = {k: v["text"] for k, v in _rows(first.folder).items()}
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:15])  # killed while writing row 3
    seen: list[str] = []
    again = run_generate_job(_job(tiny, mults=[0.0, 1.0]), status=seen.append)
    assert (again.written, again.skipped) == (2, 2)
    assert "resuming" in seen[0] and not any("exporting" in s for s in seen)  # export reused
    assert len(path.read_text().splitlines()) == 4
    assert {k: v["text"] for k, v in _rows(first.folder).items()} == texts
    with pytest.raises(CaaBakeError, match="other settings"):
        run_generate_job(_job(tiny, mults=[0.0], sampler=Sampler(max_new_tokens=7), run=name))


def test_a_given_export_is_used_for_its_behavior_and_multiplier(
    workspace: Path, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    tiny = tiny_models["llama"]
    made = run_generate_job(_job(tiny, mults=[1.0], run="made"))
    export = Path(str(_rows(made.folder)["refusal/q000/m+1/s0"]["model"]["path"]))  # type: ignore[index]
    given = tmp_path / "mine"
    export.rename(given)
    again = run_generate_job(_job(tiny, mults=[1.0], baked=[given], run="given"))
    rows = _rows(again.folder)
    assert rows["refusal/q000/m+1/s0"]["model"]["path"] == str(given)  # type: ignore[index]
    assert [r["text"] for r in rows.values()] == [r["text"] for r in _rows(made.folder).values()]
    with pytest.raises(CaaBakeError, match="baked at layer 2, not --layer 1"):
        run_generate_job(_job(tiny, mults=[1.0], layer=1, baked=[given], run="bad"))
    assert not (workspace / "results" / "bad").exists()
