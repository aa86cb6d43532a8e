"""``caa-bake generate`` and ``caa-bake judge``: open-ended answers and their 0-10 scores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import DtypeOpt, ModelOpt, QuietOpt, VectorDtypeOpt, apply_quiet, say

__all__ = ["register"]

EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        help="An OpenAI-compatible server (llama.cpp's server, vLLM, Ollama), e.g. "
        "http://127.0.0.1:8080 (/v1 is added). API key: $CAA_BAKE_API_KEY or $OPENAI_API_KEY "
        "(needed when the server is not on this machine).",
    ),
]
RateOpt = Annotated[
    float | None, typer.Option("--rate", help="At most this many requests per second.")
]
TriesOpt = Annotated[
    int, typer.Option("--tries", min=1, help="Attempts per request (backoff between).")
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait for one reply.")]


def generate(
    behavior: Annotated[
        list[str], typer.Option("--behavior", "-b", help="A CAA behavior (repeatable).")
    ],
    mults: Annotated[
        str, typer.Option("--mults", help="Multipliers; 0 is the unbaked model.")
    ] = "-1,0,1",
    layer: Annotated[
        int | None, typer.Option("--layer", "-l", help="Decoder block the vector is baked at.")
    ] = None,
    model: ModelOpt = None,
    baked: Annotated[
        list[Path] | None,
        typer.Option(
            "--baked",
            help="An existing single-bake export to use for its behavior and multiplier "
            "(repeatable); others are exported into exported_models/ with linked shards.",
        ),
    ] = None,
    endpoint: EndpointOpt = None,
    endpoint_model: Annotated[
        str | None,
        typer.Option("--endpoint-model", help="The model name the endpoint serves."),
    ] = None,
    temperature: Annotated[
        float, typer.Option("--temperature", help="0 = greedy (the paper's setting).")
    ] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass.")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Top-k sampling (0: off).")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="New tokens per answer.")
    ] = 100,
    samples: Annotated[
        int, typer.Option("--samples", help="Answers per question (sampling only).")
    ] = 1,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Only the first N questions per behavior.")
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Prompts per batch (in process).")
    ] = 8,
    no_normalize: Annotated[
        bool, typer.Option("--no-normalize", help="Bake the raw vector, not the normalized one.")
    ] = False,
    dtype: DtypeOpt = "auto",
    vector_dtype: VectorDtypeOpt = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda (in process).")] = "cpu",
    run: Annotated[
        str | None,
        typer.Option(
            "--run",
            help="Run folder name under results/ (default: from the model, layer and sampler, "
            "so rerunning the same command resumes it).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Start the run folder afresh.")] = False,
    rate: RateOpt = None,
    tries: TriesOpt = 5,
    timeout: TimeoutOpt = 300.0,
    quiet: QuietOpt = False,
) -> None:
    """Answer the behaviors' open-ended test questions with the unbaked and baked models."""
    from caa_bake.generation import GenerateJob, Sampler, parse_mults, run_generate_job

    apply_quiet(quiet)
    sampler = Sampler(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        max_new_tokens=max_new_tokens,
        samples=samples,
    )
    job = GenerateJob(
        behaviors=behavior,
        mults=parse_mults(mults),
        layer=layer,
        model=model,
        endpoint=endpoint,
        endpoint_model=endpoint_model,
        baked=list(baked or []),
        sampler=sampler,
        limit=limit,
        batch_size=batch_size,
        normalized=not no_normalize,
        dtype=dtype,
        vector_dtype=vector_dtype,
        device=device,
        run=run,
        force=force,
        timeout=timeout,
        rate=rate,
        tries=tries,
    )
    say(f"generating: {sampler.describe()}")
    result = run_generate_job(job, status=say)
    for line in result.lines:
        typer.echo(line)


def judge(
    run: Annotated[str, typer.Argument(help="A generate run: folder, or name under results/.")],
    endpoint: Annotated[
        str,
        typer.Option(
            "--endpoint",
            help="The judge's OpenAI-compatible server. API key: $CAA_BAKE_API_KEY or "
            "$OPENAI_API_KEY (needed when the server is not on this machine).",
        ),
    ],
    judge_model: Annotated[str, typer.Option("--judge-model", help="The judge model's name.")],
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Tokens the judge may reply with.")
    ] = 16,
    tries: TriesOpt = 5,
    rate: RateOpt = None,
    timeout: TimeoutOpt = 300.0,
    quiet: QuietOpt = False,
) -> None:
    """Score every answer of a run 0-10 (temperature 0); write the table and figure."""
    from caa_bake.generation import JudgeJob, run_judge_job

    apply_quiet(quiet)
    job = JudgeJob(
        run=run,
        endpoint=endpoint,
        judge_model=judge_model,
        max_tokens=max_tokens,
        timeout=timeout,
        rate=rate,
        tries=tries,
    )
    result = run_judge_job(job, status=say)
    for line in result.lines:
        typer.echo(line)
    for path in result.files:
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add ``generate`` and ``judge`` to ``app``."""
    app.command("generate")(generate)
    app.command("judge")(judge)
