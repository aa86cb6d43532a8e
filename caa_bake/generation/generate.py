"""``caa-bake generate``: answers to a behavior's open-ended test questions, per multiplier.

Two backends. In process (transformers): multiplier 0 is the unbaked model; every other
multiplier is a real baked checkpoint, exported once with the export code (hard-linked shards)
or given by the user (``--baked DIR``, matched by the bakes its config records), and loaded
like any checkpoint. Through an endpoint: any OpenAI-compatible chat server, whose one model
is labelled with the multiplier (and layer) it was baked with. Rows go to
``results/<run>/generations.jsonl``; a rerun of the same command resumes after the last row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caa_bake import __version__
from caa_bake.core import CaaBakeError, progress, results_dir
from caa_bake.data import check_behavior, load_open_ended
from caa_bake.generation.client import Endpoint, Retry
from caa_bake.generation.runs import RowFile, run_folder
from caa_bake.generation.settings import Sampler, fmt_mult, settings_digest

__all__ = ["GENERATIONS", "GenerateJob", "GenerateResult", "WorkItem", "run_generate_job"]

GENERATIONS = "generations.jsonl"
Status = Callable[[str], None]


@dataclass(frozen=True)
class WorkItem:
    behavior: str
    question_id: int
    question: str
    mult: float
    sample: int

    @property
    def id(self) -> str:
        return f"{self.behavior}/q{self.question_id:03d}/m{fmt_mult(self.mult)}/s{self.sample}"


@dataclass
class GenerateJob:
    behaviors: Sequence[str]
    mults: Sequence[float] = (-1.0, 0.0, 1.0)
    layer: int | None = None
    model: str | None = None
    endpoint: str | None = None
    endpoint_model: str | None = None
    baked: Sequence[Path] = ()
    sampler: Sampler = field(default_factory=Sampler)
    limit: int | None = None
    batch_size: int = 8
    normalized: bool = True
    dtype: str = "auto"
    vector_dtype: str | None = None  # dtype the cached vectors have (default: dtype)
    device: str = "cpu"
    run: str | None = None
    force: bool = False
    timeout: float = 300.0
    rate: float | None = None  # requests per second to the endpoint
    tries: int = 5  # attempts per request (exponential backoff between them)


@dataclass
class GenerateResult:
    folder: Path
    written: int
    skipped: int
    seconds: float
    lines: list[str] = field(default_factory=list)


def _items(job: GenerateJob, questions: dict[str, list[str]]) -> list[WorkItem]:
    return [
        WorkItem(behavior, qid, question, mult, sample)
        for mult in job.mults
        for behavior in job.behaviors
        for qid, question in enumerate(questions[behavior])
        for sample in range(job.sampler.samples)
    ]


def _check_job(job: GenerateJob) -> dict[str, list[str]]:
    if not job.behaviors:
        raise CaaBakeError("name at least one --behavior")
    job.behaviors = [check_behavior(b) for b in job.behaviors]
    if job.limit is not None and job.limit < 1:
        raise CaaBakeError(f"--limit must be >= 1, got {job.limit}")
    if job.batch_size < 1:
        raise CaaBakeError(f"--batch-size must be >= 1, got {job.batch_size}")
    if job.endpoint is None:
        if job.endpoint_model is not None:
            raise CaaBakeError("--endpoint-model needs --endpoint URL")
        if any(m != 0 for m in job.mults) and job.layer is None:
            raise CaaBakeError("baking a multiplier needs --layer L (the block to bake at)")
    else:
        if job.endpoint_model is None:
            raise CaaBakeError("--endpoint needs --endpoint-model NAME (the served model)")
        if job.baked or job.model is not None:
            raise CaaBakeError("--endpoint serves the model: drop --model / --baked")
        if len(job.mults) != 1:
            raise CaaBakeError(
                "an endpoint serves one model: give the one multiplier it was baked with "
                "(--mults 0 for an unbaked one; run again with the same --run for others)"
            )
    return {b: load_open_ended(b)[: job.limit] for b in job.behaviors}


def _default_run(slug: str, job: GenerateJob) -> str:
    layer = "" if job.layer is None else f"-L{job.layer}"
    return f"generate-{slug}{layer}-{settings_digest(job.sampler.record())}"


# ---- the endpoint backend ----------------------------------------------------------------


def _run_endpoint(
    job: GenerateJob, questions: dict[str, list[str]], status: Status
) -> GenerateResult:
    from caa_bake.models import slugify

    assert job.endpoint is not None and job.endpoint_model is not None
    endpoint = Endpoint(
        job.endpoint,
        timeout=job.timeout,
        retry=Retry(tries=job.tries),
        min_interval=1.0 / job.rate if job.rate else 0.0,
        on_retry=status,
    )
    served = endpoint.check_model(job.endpoint_model)  # up and serving it, before any file
    model = {"endpoint": endpoint.url, "name": job.endpoint_model, "listed": served is not None}
    folder = results_dir() / (job.run or _default_run(slugify(job.endpoint_model), job))
    # a local server (llama.cpp, vLLM, Ollama) gets its extensions pinned, so its own defaults
    # (llama.cpp: repeat penalty 1.1, top-k 40, min-p 0.05) do not change the sampler
    extra: dict[str, Any] = {}
    if endpoint.local:
        extra = {"repeat_penalty": 1.0, "min_p": 0.0, "top_k": job.sampler.top_k}
    manifest = _manifest(job, "endpoint", model)
    started = time.monotonic()
    with (
        run_folder(folder, manifest, **_RUN_ARGS, force=job.force),
        RowFile(folder / GENERATIONS) as rows,
    ):
        todo = [i for i in _items(job, questions) if i.id not in rows.done]
        skipped = len(_items(job, questions)) - len(todo)
        if skipped:
            status(f"resuming {folder.name}: {skipped} rows already done")
        for item in progress(todo, desc="generate", unit="answer"):
            messages = [{"role": "user", "content": item.question}]
            reply = endpoint.chat(
                job.endpoint_model,
                messages,
                temperature=job.sampler.temperature,
                max_tokens=job.sampler.max_new_tokens,
                top_p=None if job.sampler.greedy else job.sampler.top_p,
                top_k=None if job.sampler.greedy or endpoint.local else job.sampler.top_k,
                seed=None if job.sampler.greedy else job.sampler.seed + item.sample,
                extra=extra,
            )
            row = _row(item, job, "endpoint", model, {"messages": messages}, reply.text)
            row.update(finish_reason=reply.finish_reason, served_model=reply.model)
            rows.append(row)
        written = rows.written
    return GenerateResult(folder, written, skipped, time.monotonic() - started)


_RUN_ARGS: dict[str, Any] = {"must_match": ("kind", "sampler", "model"), "rows_name": GENERATIONS}


def _manifest(job: GenerateJob, backend: str, model: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "generate",
        "tool": f"caa-bake {__version__}",
        "backend": backend,
        "model": model.get("id", "endpoint"),
        "sampler": job.sampler.record(),
        "dataset": "open_ended",
    }


def _row(
    item: WorkItem,
    job: GenerateJob,
    backend: str,
    model: dict[str, Any],
    prompt: dict[str, Any],
    text: str,
) -> dict[str, Any]:
    return {
        "id": item.id,
        "behavior": item.behavior,
        "question_id": item.question_id,
        "question": item.question,
        "mult": item.mult,
        "layer": job.layer,
        "sample": item.sample,
        "backend": backend,
        "model": model,
        "settings": job.sampler.record(),
        **prompt,
        "text": text,
    }


# ---- entry point -------------------------------------------------------------------------


def run_generate_job(job: GenerateJob, *, status: Status = lambda _msg: None) -> GenerateResult:
    """Check everything, then generate every missing row (see the module docstring)."""
    questions = _check_job(job)
    if job.endpoint is not None:
        result = _run_endpoint(job, questions, status)
    else:
        from caa_bake.generation.local_run import run_local

        result = run_local(job, questions, status, _items(job, questions))
    result.lines.append(
        f"{result.written} new rows ({result.skipped} already done) in {result.seconds:.1f} s: "
        f"{result.folder / GENERATIONS}"
    )
    return result
