"""``caa-bake eval``: the unsteered model, baked checkpoints and hook-steered equivalents,
evaluated with the caa-bake lm-eval tasks in one run and reported in one table.

The variants (``base``, ``baked``, ``hooks``, ``finetuned``, ``combined``), what their
kinds mean, and how each variant's model is built, are in :mod:`caa_bake.evaluation.variants`.
Multiplier 0 is not re-evaluated: its column shows the unsteered model of the state. Every
variant runs the same lm-eval tasks through ``simple_evaluate`` on an ``HFLM`` built around
the loaded model object; ``--resume`` reuses the variants an earlier invocation finished.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from caa_bake.core import CaaBakeError
from caa_bake.evaluation.common import (
    LoadedModel,
    PartialLog,
    behavior_provenance,
    check_behaviors,
    check_limit,
    check_vector_dtype,
    describe_set,
    load_for_eval,
    make_lm,
    prepare_run_dir,
    provenance,
    tasks_sha256,
    vector_loader,
)
from caa_bake.evaluation.report import write_eval_report
from caa_bake.evaluation.tables import Row
from caa_bake.evaluation.tasks import SampleValue, TaskResult, check_task_data, run_tasks
from caa_bake.evaluation.variants import (
    STEERED_KINDS,
    EvalJob,
    Status,
    Variant,
    find_finetuned,
    plan_variants,
    prepared_model,
    vector_of,
)
from caa_bake.models import num_layers, parse_dtype, resolve_dtype, resolve_model
from caa_bake.steering import (
    SteeringVector,
    check_layer,
    get_vector,
    normalization_members,
    pick_device,
)

__all__ = ["EvalRun", "VariantResult", "run_eval_job"]


@dataclass
class VariantResult:
    """A variant's task results and the identity of what was evaluated."""

    variant: Variant
    model_path: str
    weights_fingerprint: str
    vector_sha256: str | None
    wall_s: float
    results: dict[str, TaskResult]
    note: str = ""


@dataclass
class EvalRun:
    """Where a run's outputs went, and its results."""

    folder: Path
    results: list[VariantResult]
    files: list[Path]
    wall_s: float


def _run_variant(
    loaded: LoadedModel,
    variant: Variant,
    vectors: dict[str, SteeringVector],
    job: EvalJob,
    status: Status,
) -> VariantResult:
    start = time.perf_counter()
    vector = vector_of(variant, vectors)
    with prepared_model(loaded, variant, vector, job, status) as prepared:
        lm = make_lm(prepared.model, loaded.tokenizer, job.batch_size)
        results = run_tasks(lm, variant.tasks, loaded.setup, limit=job.limit)
    sha = vector.sha256(job.layer) if vector is not None else None
    wall = time.perf_counter() - start
    return VariantResult(
        variant, prepared.path, prepared.fingerprint, sha, wall, results, prepared.note
    )


def _check_job(job: EvalJob) -> None:
    check_limit(job.limit)
    parse_dtype(job.dtype)
    check_vector_dtype(job.vector_dtype)
    unknown = [k for k in job.kinds if k not in STEERED_KINDS]
    if unknown:
        raise CaaBakeError(f"unknown kind(s) {', '.join(unknown)}; valid: baked, hooks")
    if job.batch_size < 1:
        raise CaaBakeError(f"--batch-size must be at least 1, got {job.batch_size}")


def run_eval_job(job: EvalJob, *, status: Status) -> EvalRun:
    """Validate everything, evaluate every variant, write the report; returns the run."""
    started = time.perf_counter()
    _check_job(job)
    behaviors = check_behaviors(job.behaviors)
    members = normalization_members(job.normalize_with)
    job = replace(job, behaviors=behaviors)
    check_task_data(plan_variants(job, [])[0].tasks)
    device = pick_device(job.device)
    dtype = resolve_dtype(job.dtype, device)
    ref = resolve_model(job.model)
    finetuned = find_finetuned(ref, behaviors, job.finetuned, discover=job.discover_finetuned)
    plan = plan_variants(job, finetuned)
    check_layer(job.layer, num_layers(AutoConfig.from_pretrained(ref.path)))
    folder = prepare_run_dir(job.run, "eval", ref.slug, force=job.force, resume=job.resume)
    log = PartialLog(folder / "variants.partial.jsonl", resume=job.resume)
    status(f"model {ref.model_id}; {len(plan)} model variants; results in {folder}")
    loaded = load_for_eval(ref, device, dtype)
    status(f"running in {loaded.dtype} on {device}")
    vectors = {}
    vectors_from = vector_loader(loaded, job.vector_dtype)
    if any(v.behavior for v in plan):
        for behavior in behaviors:
            status(
                f"vector {behavior} L{job.layer} (normalized against {describe_set(members)}) ..."
            )
            vectors[behavior] = get_vector(
                ref,
                behavior,
                [job.layer],
                normalized=True,
                loader=vectors_from,
                normalize_with=job.normalize_with,
            )
    results: list[VariantResult] = []
    reused = 0
    for i, variant in enumerate(plan, start=1):
        vector = vector_of(variant, vectors)
        sha = vector.sha256(job.layer) if vector is not None else None
        key = _variant_key(variant, loaded, job, sha)
        stored = log.get(key)
        if stored is not None:
            status(f"[{i}/{len(plan)}] {variant.label}: finished before, reused")
            results.append(_from_json(variant, stored))
            reused += 1
            continue
        status(f"[{i}/{len(plan)}] {variant.label}: {', '.join(variant.tasks)}")
        result = _run_variant(loaded, variant, vectors, job, status)
        log.add(key, _to_json(result))
        status(f"[{i}/{len(plan)}] done in {result.wall_s:.1f} s")
        results.append(result)
    wall = time.perf_counter() - started
    meta = provenance(loaded, plan[0].tasks)
    meta.update(
        {
            "layer": job.layer,
            "multipliers": job.multipliers,
            "behaviors": behaviors,
            "limit": job.limit,
            "batch_size": job.batch_size,
            "normalization_set": members,
            "behavior_data": behavior_provenance(behaviors),
            "finetuned": [
                {"state": v.state, "behavior": v.behavior, "path": str(v.model_dir)}
                for v in plan
                if v.kind == "finetuned"
            ],
            "vectors": {
                b: {
                    "sha256": v.sha256(job.layer),
                    "norm": v.norms()[job.layer],
                    "normalization": _normalization(v),
                    "dataset_sha256": v.metadata.get("dataset_sha256", ""),
                    "dtype": v.extraction_dtype,
                }
                for b, v in vectors.items()
            },
            "wall_s": wall,
            "variants_wall_s": sum(r.wall_s for r in results),
            "variants_reused": reused,
        }
    )
    files = write_eval_report(
        folder,
        meta=meta,
        variants=[_variant_record(r) for r in results],
        rows=_rows(results, loaded.dtype),
        samples=_samples(results),
        behaviors=behaviors,
        multipliers=job.multipliers,
    )
    return EvalRun(folder, results, files, wall)


def _variant_key(
    variant: Variant, loaded: LoadedModel, job: EvalJob, vector_sha: str | None
) -> dict[str, Any]:
    """What makes a finished variant reusable by ``--resume``."""
    return {
        "unit": "variant",
        "state": variant.state,
        "kind": variant.kind,
        "behavior": variant.behavior,
        "layer": variant.layer,
        "multiplier": variant.multiplier,
        "tasks": list(variant.tasks),
        "model_dir": str(variant.model_dir) if variant.model_dir else None,
        "model": loaded.ref.weights_fingerprint,
        "vector": vector_sha,
        "limit": job.limit,
        "dtype": loaded.dtype,
        "prompt": loaded.setup.task_style,
        "eval_tasks": tasks_sha256(),
    }


def _to_json(result: VariantResult) -> dict[str, Any]:
    return {
        "model_path": result.model_path,
        "weights_fingerprint": result.weights_fingerprint,
        "vector_sha256": result.vector_sha256,
        "wall_s": result.wall_s,
        "note": result.note,
        "results": {
            task: {"metrics": r.metrics, "n": r.n, "samples": [asdict(x) for x in r.samples]}
            for task, r in result.results.items()
        },
    }


def _from_json(variant: Variant, data: dict[str, Any]) -> VariantResult:
    results = {
        task: TaskResult(r["metrics"], r["n"], [SampleValue(**x) for x in r["samples"]])
        for task, r in data["results"].items()
    }
    return VariantResult(
        variant,
        data["model_path"],
        data["weights_fingerprint"],
        data["vector_sha256"],
        data["wall_s"],
        results,
        data["note"] + " (resumed)",
    )


def _normalization(vector: SteeringVector) -> Any:
    raw = vector.metadata.get("normalization", "none")
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _variant_record(result: VariantResult) -> dict[str, Any]:
    v = result.variant
    return {
        "label": v.label,
        "state": v.state,
        "kind": v.kind,
        "behavior": v.behavior,
        "layer": v.layer,
        "multiplier": v.multiplier,
        "model_path": result.model_path,
        "weights_fingerprint": result.weights_fingerprint,
        "vector_sha256": result.vector_sha256,
        "note": result.note,
        "wall_s": result.wall_s,
        "tasks": {
            task: {"n": r.n, "metrics": r.metrics} for task, r in sorted(result.results.items())
        },
    }


def _rows(results: list[VariantResult], dtype: str) -> list[Row]:
    rows = []
    for result in results:
        v = result.variant
        for task, task_result in result.results.items():
            for metric, value in sorted(task_result.metrics.items()):
                if metric.endswith("_stderr"):
                    continue
                rows.append(
                    Row(
                        state=v.state,
                        kind=v.kind,
                        behavior=v.behavior,
                        layer=v.layer,
                        multiplier=v.multiplier,
                        task=task,
                        metric=metric,
                        value=value,
                        stderr=task_result.metrics.get(f"{metric}_stderr"),
                        n=task_result.n,
                        dtype=dtype,
                    )
                )
    return rows


def _samples(results: list[VariantResult]) -> list[dict[str, Any]]:
    out = []
    for result in results:
        v = result.variant
        for task, task_result in result.results.items():
            for s in task_result.samples:
                out.append(
                    {
                        "state": v.state,
                        "kind": v.kind,
                        "behavior": v.behavior,
                        "multiplier": v.multiplier,
                        "task": task,
                        **asdict(s),
                    }
                )
    return out
