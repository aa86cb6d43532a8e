"""``caa-bake judge RUN``: score every generated answer 0-10 with a judge model.

The judge is any OpenAI-compatible chat endpoint, asked at temperature 0 with the system
prompt and the behavior's rubric (:mod:`caa_bake.generation.rubrics`). Scores go to
``RUN/judge-<judge>/scores.jsonl`` (one row per answer, appended and flushed whole, so a rerun
resumes); a reply that does not start with a number in [0, 10] is kept with ``score: null``,
counted and reported. Then the table and figure of mean score against multiplier are
(re)written from every row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caa_bake import __version__
from caa_bake.core import CaaBakeError, progress
from caa_bake.generation.client import Endpoint
from caa_bake.generation.generate import GENERATIONS
from caa_bake.generation.report import write_report
from caa_bake.generation.rubrics import RUBRICS, SYSTEM_PROMPT, judge_messages, parse_score
from caa_bake.generation.runs import RowFile, read_rows, resolve_run, run_folder

__all__ = ["SCORES", "JudgeJob", "JudgeResult", "run_judge_job"]

SCORES = "scores.jsonl"


@dataclass
class JudgeJob:
    run: str | Path
    endpoint: str
    judge_model: str
    max_tokens: int = 16
    timeout: float = 300.0
    rate: float | None = None  # requests per second
    tries: int = 5
    backoff: float = 1.0


@dataclass
class JudgeResult:
    folder: Path
    written: int
    skipped: int
    non_numeric: int
    scored: int
    seconds: float
    files: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def _generations(run: Path) -> list[dict[str, Any]]:
    rows = read_rows(run / GENERATIONS)
    if not rows:
        raise CaaBakeError(f"{run} has no generations ({GENERATIONS}); run `caa-bake generate`")
    unknown = sorted({str(r.get("behavior")) for r in rows} - set(RUBRICS))
    if unknown:
        raise CaaBakeError(f"no judging rubric for {', '.join(unknown)} (rows in {run})")
    return rows


def _judge_slug(name: str) -> str:
    from caa_bake.models import slugify

    return slugify(name.rsplit("/", 1)[-1].removesuffix(".gguf")) or "judge"


def run_judge_job(job: JudgeJob, *, status: Callable[[str], None] = lambda _m: None) -> JudgeResult:
    """Score the run's answers that are not scored yet, then write the table and figure."""
    from caa_bake.generation.client import Retry

    if job.max_tokens < 1:
        raise CaaBakeError(f"--max-tokens must be >= 1, got {job.max_tokens}")
    run = resolve_run(job.run)
    generations = _generations(run)
    endpoint = Endpoint(
        job.endpoint,
        timeout=job.timeout,
        retry=Retry(tries=job.tries, backoff=job.backoff),
        min_interval=1.0 / job.rate if job.rate else 0.0,
        on_retry=status,
    )
    endpoint.check_model(job.judge_model, "--judge-model")  # before any file is written
    folder = run / f"judge-{_judge_slug(job.judge_model)}"
    manifest = {
        "kind": "judge",
        "tool": f"caa-bake {__version__}",
        "endpoint": endpoint.url,
        "judge_model": job.judge_model,
        "temperature": 0,
        "max_tokens": job.max_tokens,
        "system_prompt": SYSTEM_PROMPT,
        "rubrics": RUBRICS,
    }
    extra = {"repeat_penalty": 1.0} if endpoint.local else {}
    started = time.monotonic()
    must = ("kind", "judge_model", "system_prompt", "rubrics", "max_tokens")
    with (
        run_folder(folder, manifest, must_match=must, rows_name=SCORES),
        RowFile(folder / SCORES) as scores,
    ):
        todo = [g for g in generations if str(g["id"]) not in scores.done]
        skipped = len(generations) - len(todo)
        if skipped:
            status(f"resuming: {skipped} answers already scored")
        for gen in progress(todo, desc="judge", unit="answer"):
            messages = judge_messages(gen["behavior"], gen["question"], gen["text"])
            reply = endpoint.chat(
                job.judge_model, messages, temperature=0.0, max_tokens=job.max_tokens, extra=extra
            )
            score = parse_score(reply.text)
            scores.append(
                {
                    "id": gen["id"],
                    "behavior": gen["behavior"],
                    "mult": gen["mult"],
                    "question_id": gen.get("question_id"),
                    "sample": gen.get("sample", 0),
                    "judge_model": job.judge_model,
                    "reply": reply.text,
                    "score": score,
                }
            )
        written = scores.written
        rows = [scores.done[str(g["id"])] for g in generations if str(g["id"]) in scores.done]
    files, summary = write_report(folder, rows, judge=job.judge_model)
    non_numeric = sum(1 for r in rows if r.get("score") is None)
    result = JudgeResult(
        folder,
        written,
        skipped,
        non_numeric,
        len(rows) - non_numeric,
        time.monotonic() - started,
        files,
    )
    result.lines = [
        *summary,
        f"{written} answers judged now ({skipped} before) in {result.seconds:.1f} s; "
        f"{non_numeric} of {len(rows)} replies were not a score in [0, 10] (kept as null)",
    ]
    return result
