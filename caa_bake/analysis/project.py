"""``caa-bake analyze project``: how strongly each token of a prompt points along the vector.

For a prompt (or an item of the behavior's test split) every token's residual stream after
block ``L`` (the extraction's position rule, at every position instead of only the answer
letter) is projected on the unit vector ``v[L] / |v[L]|``. The base model and any number of
baked checkpoints (``--baked DIR``) are run on the same token ids, one model in memory at a
time. A bias baked at a layer at or before ``L`` shifts every token by ``m · v · u`` (the
vector is added at every position, prompt included).

Output: ``project.csv`` (one row per model and token), ``project.png`` (a line per model),
``project.html`` (the tokens coloured by their projection: red along the vector, blue
against it; the colour scale is the largest magnitude after the first token, whose
attention-sink activations are often far larger than the rest) and ``project.json``.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig

from caa_bake.analysis.figures import plot_projection
from caa_bake.analysis.run import (
    AnalysisRun,
    check_layers_in,
    load_vector,
    provenance,
    resolve_behaviors,
    run_target,
    vector_record,
    write_csv_rows,
    write_json,
    writing_run,
)
from caa_bake.core import CaaBakeError, progress
from caa_bake.data import all_behaviors, load_pairs
from caa_bake.models import (
    ModelRef,
    decoder_blocks,
    dtype_name,
    encode_prompt,
    hidden_size,
    load_model,
    num_layers,
    resolve_dtype,
    resolve_model,
)
from caa_bake.steering import check_layer, pick_device, vector_path

__all__ = ["ProjectJob", "projection_html", "run_project_job", "token_projections"]


class _Stop(Exception):
    """Ends the forward pass once block ``L`` has run."""


def token_projections(
    model: nn.Module, input_ids: Sequence[int], layer: int, direction: torch.Tensor
) -> torch.Tensor:
    """float64 ``[tokens]``: block ``layer``'s output at each position · ``direction``/norm."""
    norm = float(direction.norm())
    if norm == 0.0:
        raise CaaBakeError(f"the vector at layer {layer} is zero; it has no direction")
    unit = direction.double() / norm
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _args: object, output: object) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        assert isinstance(hidden, torch.Tensor)
        captured.append(hidden[0].detach().double().cpu())
        raise _Stop

    handle = decoder_blocks(model)[layer].register_forward_hook(hook)
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            model(input_ids=torch.tensor([list(input_ids)], device=device), use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0] @ unit


def projection_html(title: str, tokens: Sequence[str], series: dict[str, list[float]]) -> str:
    """A standalone page: per model, the tokens on a red (+) / blue (-) background."""
    tail = [abs(v) for values in series.values() for v in values[1:]]
    scale = max(tail or [abs(v) for values in series.values() for v in values] or [1.0]) or 1.0
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif}}"
        ".t{font-family:monospace;white-space:pre-wrap;line-height:1.9}"
        ".t span{border-radius:3px;padding:1px 0}</style></head><body>",
        f"<h3>{html.escape(title)}</h3><p>red: along the vector, blue: against it; full colour "
        f"at |projection| = {scale:.3g} (hover a token for its value)</p>",
    ]
    for name, values in series.items():
        parts.append(f"<h4>{html.escape(name)}</h4><div class='t'>")
        for i, (token, value) in enumerate(zip(tokens, values, strict=True)):
            alpha = min(1.0, abs(value) / scale)
            rgb = "220,40,40" if value >= 0 else "40,90,220"
            text = html.escape(token).replace("\n", "\u21b5\n")
            parts.append(
                f"<span style='background:rgba({rgb},{alpha:.3f})' "
                f"title='#{i} {value:.4f}'>{text}</span>"
            )
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "".join(parts)


@dataclass(frozen=True)
class ProjectJob:
    """What ``caa-bake analyze project`` was asked to do."""

    behavior: str
    layer: int
    prompt: str | None = None
    item: int | None = None
    answer: str = ""
    model: str | None = None
    baked: tuple[Path, ...] = ()
    dtype: str = "auto"
    device: str = "auto"
    run: str | None = None
    force: bool = False


def _question(job: ProjectJob, behavior: str) -> str:
    if (job.prompt is None) == (job.item is None):
        raise CaaBakeError("give the text to project: --prompt TEXT or --item N (not both)")
    if job.prompt is not None:
        if not job.prompt.strip():
            raise CaaBakeError("--prompt is empty")
        return job.prompt
    if behavior not in all_behaviors():
        raise CaaBakeError(
            f"--item reads a named behavior's test split; '{behavior}' is a custom vector: "
            "pass the text with --prompt"
        )
    try:
        items = load_pairs(behavior, "test")
    except CaaBakeError as err:  # e.g. a registered custom behavior without a test split
        raise CaaBakeError(f"{err}; or pass the text with --prompt") from None
    assert job.item is not None
    if not 0 <= job.item < len(items):
        raise CaaBakeError(
            f"--item {job.item} is out of range: the {behavior} test split has "
            f"{len(items)} items (0-{len(items) - 1})"
        )
    return items[job.item].question


def _baked_refs(ref: ModelRef, baked: Sequence[Path]) -> list[ModelRef]:
    width = hidden_size(AutoConfig.from_pretrained(ref.path))
    out = []
    for folder in baked:
        if not Path(folder).is_dir():
            raise CaaBakeError(f"--baked {folder}: no such folder")
        other = resolve_model(str(folder))
        theirs = hidden_size(AutoConfig.from_pretrained(other.path))
        if theirs != width:
            raise CaaBakeError(
                f"--baked {folder} has hidden size {theirs}, {ref.model_id} has {width}: "
                "the vector's projection needs models of one hidden size"
            )
        out.append(other)
    return out


def run_project_job(job: ProjectJob, *, status: Callable[[str], None]) -> AnalysisRun:
    """Validate everything, run each model once, write ``project.*``."""
    ref = resolve_model(job.model)
    behavior = resolve_behaviors([job.behavior], lambda b: vector_path(ref.slug, b).is_file())[0]
    question = _question(job, behavior)
    device = pick_device(job.device)
    dtype = resolve_dtype(job.dtype, device)
    check_layer(job.layer, num_layers(AutoConfig.from_pretrained(ref.path)))
    vector, vpath = load_vector(ref, behavior)
    fix = f"extract it with `caa-bake extract --behavior {behavior} --layers {job.layer}`"
    check_layers_in(f"the vector file {vpath}", vector.layer_ids, [job.layer], fix)
    baked = _baked_refs(ref, job.baked)
    folder = run_target(job.run, "project", ref.slug, force=job.force)
    status(f"model {ref.model_id} + {len(baked)} baked; layer {job.layer}; results in {folder}")
    series: dict[str, list[float]] = {}
    models: dict[str, Any] = {}
    ids: list[int] = []
    tokens: list[str] = []
    every = [ref, *baked]
    for i, current in enumerate(progress(every, desc="models", total=len(every), unit="model")):
        model, tokenizer = load_model(current, dtype=dtype, device=device)
        if i == 0:
            ids = encode_prompt(tokenizer, question, job.answer).input_ids
            tokens = [str(tokenizer.decode([t])) for t in ids]
        name = "base" if i == 0 else current.path.name
        series[name] = token_projections(model, ids, job.layer, vector[job.layer]).tolist()
        config = getattr(model, "config", None)
        models[name] = {
            "model_id": current.model_id,
            "path": str(current.path),
            "weights_fingerprint": current.weights_fingerprint,
            "caa_bake": getattr(config, "caa_bake", None),
        }
        del model
    meta = provenance(
        ref,
        behavior=behavior,
        layer=job.layer,
        dtype=dtype_name(dtype),
        device=device,
        prompt={"question": question, "item": job.item, "answer_prefix": job.answer},
        token_ids=ids,
        vector=vector_record(vector, vpath, [job.layer]),
        vector_norm=float(vector[job.layer].norm()),
        models=models,
    )
    rows = [
        {"model": name, "position": pos, "token_id": tid, "token": tok, "projection": round(v, 6)}
        for name, values in series.items()
        for pos, (tid, tok, v) in enumerate(zip(ids, tokens, values, strict=True))
    ]
    title = f"{behavior} vector, layer {job.layer}: per-token projection ({ref.model_id})"
    with writing_run(folder, force=job.force) as tmp:
        page = tmp / "project.html"
        page.write_text(projection_html(title, tokens, series), encoding="utf-8")
        written = [
            write_json(tmp / "project.json", {**meta, "projection": series}),
            write_csv_rows(tmp / "project.csv", rows),
            plot_projection(tokens, series, tmp / "project.png", title),
            page,
        ]
    summary = [
        f"{name}: mean projection {sum(v) / len(v):+.3f}, at the last token {v[-1]:+.3f}"
        for name, v in series.items()
    ]
    return AnalysisRun(folder, [folder / p.name for p in written], summary)
