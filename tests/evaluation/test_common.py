"""``caa_bake.evaluation.common``: option parsing, run folders and the resumable unit log
shared by ``eval`` and ``sweep``."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

import caa_bake
from caa_bake.core.errors import CaaBakeError
from caa_bake.data.behaviors import CAA_BEHAVIORS
from caa_bake.evaluation.common import (
    PartialLog,
    check_behaviors,
    check_limit,
    prepare_run_dir,
    tasks_sha256,
)
from caa_bake.evaluation.tasks import tasks_dir


def test_limit() -> None:
    assert check_limit(None) is None
    assert check_limit(1) == 1
    for bad in (0, -5):
        with pytest.raises(CaaBakeError, match=f"got {bad}$"):
            check_limit(bad)


def test_behaviors_are_canonical_unique_and_in_order() -> None:
    assert check_behaviors(["refusal", "sycophancy", "refusal"]) == ["refusal", "sycophancy"]
    assert check_behaviors(list(reversed(CAA_BEHAVIORS))) == list(reversed(CAA_BEHAVIORS))


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ([], "name a behavior (--behavior B) or pass --all-behaviors"),
        (["refusl"], "unknown behavior 'refusl'"),
    ],
)
def test_bad_behaviors(names: list[str], message: str) -> None:
    with pytest.raises(CaaBakeError, match=re.escape(message)):
        check_behaviors(names)


def test_every_family_of_behavior_is_accepted() -> None:
    names = ["anthropic-power-seeking-inclination", "Refusal"]
    assert check_behaviors(names) == ["anthropic-power-seeking-inclination", "refusal"]


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "results"
    monkeypatch.setenv("CAA_BAKE_RESULTS_DIR", str(folder))
    return folder


def test_default_run_name(results: Path) -> None:
    folder = prepare_run_dir(None, "sweep", "tiny-llama", force=False)
    assert folder.parent == results and folder.is_dir()
    assert re.fullmatch(r"sweep-tiny-llama-\d{8}-\d{6}", folder.name)


def test_named_run_must_be_new_or_empty(results: Path) -> None:
    assert prepare_run_dir("r1", "eval", "m", force=False) == results / "r1"
    assert prepare_run_dir("r1", "eval", "m", force=False) == results / "r1"  # still empty
    (results / "r1" / "results.md").write_text("old")
    with pytest.raises(CaaBakeError, match="already holds results; pick another --run"):
        prepare_run_dir("r1", "eval", "m", force=False)
    assert prepare_run_dir("r1", "eval", "m", force=True) == results / "r1"
    assert prepare_run_dir("r1", "eval", "m", force=False, resume=True) == results / "r1"
    assert (results / "r1" / "results.md").read_text() == "old"  # never cleared here


@pytest.mark.parametrize("name", ["bad name", "../up", "-dash", ".hidden", "a/b"])
def test_bad_run_names(results: Path, name: str) -> None:
    with pytest.raises(CaaBakeError, match="must use letters, digits"):
        prepare_run_dir(name, "eval", "m", force=False)
    assert not results.exists()


def test_resume_needs_a_run_name(results: Path) -> None:
    with pytest.raises(CaaBakeError, match="--resume needs the --run name"):
        prepare_run_dir(None, "eval", "m", force=False, resume=True)
    assert not results.exists()


def test_run_folder_that_cannot_be_created(results: Path) -> None:
    results.parent.mkdir(exist_ok=True)
    results.write_text("a file, not a folder")
    with pytest.raises(CaaBakeError, match="cannot create "):
        prepare_run_dir("r", "eval", "m", force=False)


def test_partial_log_records_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "units.partial.jsonl"
    log = PartialLog(path, resume=False)
    assert len(log) == 0
    log.add({"layer": 1, "mult": -1.0}, 0.25)
    log.add({"mult": 1.0, "layer": 1}, {"p": 0.75})
    assert log.get({"mult": -1.0, "layer": 1}) == 0.25  # key order does not matter
    assert log.get({"layer": 2, "mult": 1.0}) is None
    # an interruption cut the last line short
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"key": {"layer": 3')
    again = PartialLog(path, resume=True)
    assert len(again) == 2
    assert again.get({"layer": 1, "mult": 1.0}) == {"p": 0.75}
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == {"key": {"layer": 1, "mult": -1.0}, "value": 0.25}


def test_partial_log_without_resume_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "units.partial.jsonl"
    PartialLog(path, resume=False).add({"k": 1}, 1)
    fresh = PartialLog(path, resume=False)
    assert len(fresh) == 0 and not path.exists()
    assert len(PartialLog(tmp_path / "none.jsonl", resume=True)) == 0


def test_tasks_sha256_covers_the_checkouts_task_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``CAA_BAKE_EVAL_TASKS`` the tasks are the checkout's ``eval_tasks/`` folder."""
    monkeypatch.delenv("CAA_BAKE_EVAL_TASKS", raising=False)
    folder = Path(caa_bake.__file__).resolve().parents[1] / "eval_tasks"
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix != ".pyc"):
        digest.update(f"{path.name}\0".encode())
        digest.update(path.read_bytes())
    assert tasks_dir() == folder
    assert tasks_sha256() == digest.hexdigest()


def test_tasks_sha256_follows_the_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "utils.py").write_text("# tasks")
    (tmp_path / "a.yaml").write_text("task: a")
    monkeypatch.setenv("CAA_BAKE_EVAL_TASKS", str(tmp_path))
    first = tasks_sha256()
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    (tmp_path / "a.yaml").write_text("task: b")
    assert tasks_sha256() != first
    (tmp_path / "a.yaml").write_text("task: a")
    assert tasks_sha256() == first


def test_scored_tail_by_hand() -> None:
    import torch

    from caa_bake.evaluation.common import scored_tail

    # widths 6; rows of length 6, 4 and 2 (right-padded with 0)
    inps = torch.tensor([[5, 6, 7, 8, 9, 3], [5, 6, 7, 8, 0, 0], [5, 6, 0, 0, 0, 0]])
    assert scored_tail(inps, 1) == 5  # the 2-token row: its last token is 4 from the end
    assert scored_tail(inps, 2) == 6  # capped at the width
    assert scored_tail(inps[:2], 1) == 3
    assert scored_tail(inps[:1], 1) == 1
    # a real trailing token 0 makes the row look shorter: the tail grows, never shrinks
    assert scored_tail(torch.tensor([[5, 6, 0], [5, 6, 7]]), 1) == 2


def test_lm_head_only_where_scored_matches_stock_lm_eval(tmp_path: Path) -> None:
    """Our ``make_lm`` (logits at the scored tail only, no KV cache) vs lm-eval's stock
    ``HFLM`` on the same model: the same log-likelihoods and greedy flags, for rows of
    many lengths, 1- to 3-token continuations and contexts ending in token 0."""
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from caa_bake.evaluation.common import make_lm
    from tests.tiny_models import build_model

    folder = build_model("llama", tmp_path / "m", random_biases=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    gen = torch.Generator().manual_seed(0)
    requests = []
    for n in range(12):
        ctx = torch.randint(1, len(tok), (3 + 5 * n,), generator=gen).tolist()
        if n % 4 == 0:
            ctx[-1] = 0
        cont = torch.randint(0, len(tok), (1 + n % 3,), generator=gen).tolist()
        requests.append((("c", "x"), ctx, cont))
    lm = make_lm(model, tok, 4)
    ours = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    lm._longest_continuation = 1  # what _loglikelihood_tokens sets around its model calls
    batch = torch.tensor([[4, 5, 6, 7], [4, 5, 0, 0]])
    assert lm._model_call(batch).shape[:2] == (2, 3)
    stock = HFLM(pretrained=model, tokenizer=tok, batch_size=4)
    want = stock._loglikelihood_tokens(requests, disable_tqdm=True)
    assert [g for _, g in ours] == [g for _, g in want]
    diff = max(abs(a - b) for (a, _), (b, _) in zip(ours, want, strict=True))
    assert diff < 1e-4, diff
