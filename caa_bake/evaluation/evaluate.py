"""``caa-bake eval``: the unsteered model, baked checkpoints and hook-steered equivalents,
evaluated with the caa-bake lm-eval tasks in one run and reported in one table.

Variants (a *state* is the finetuning state: ``none``, or a ``--finetuned NAME=DIR``):

- ``base``: the source model (state ``none``, multiplier 0);
- ``baked``: the exported checkpoint with ``m x v`` in block L's MLP bias, built with
  :func:`caa_bake.bake.export.export_checkpoint` (or reused when an identical export exists),
  reloaded from disk;
- ``hooks``: the source model with ``m x v`` added to block L's output from the end of the
  instruction onward (the CAA reference positions; :mod:`caa_bake.evaluation.reference_hooks`);
- ``finetuned``: a finetuned checkpoint (multiplier 0);
- ``combined``: the finetuned checkpoint with the *source model's* vector baked in (the
  export ``caa-bake export --model <finetuned> --vector-from <source>`` writes, reused when
  an identical one exists), reloaded from disk.

Multiplier 0 is not re-evaluated: its column shows the unsteered model of the state. Every
variant runs the same lm-eval tasks through ``simple_evaluate`` on an ``HFLM`` built around
the loaded model object.
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from caa_bake.bake.export import Bake, export_checkpoint, export_name, read_export_block
from caa_bake.core.errors import CaaBakeError
from caa_bake.core.paths import exports_dir
from caa_bake.evaluation.common import (
    LoadedModel,
    PartialLog,
    check_behaviors,
    check_limit,
    load_for_eval,
    make_lm,
    prepare_run_dir,
    provenance,
    tasks_sha256,
)
from caa_bake.evaluation.reference_hooks import steer_from_tail
from caa_bake.evaluation.report import Row, write_eval_report
from caa_bake.evaluation.tasks import (
    SampleValue,
    TaskResult,
    check_task_data,
    resolve_tasks,
    run_tasks,
)
from caa_bake.finetune.listing import FinetunedCheckpoint, list_finetuned
from caa_bake.models.dtypes import parse_dtype, resolve_dtype
from caa_bake.models.loading import ModelRef, check_model_dir, load_model, num_layers, resolve_model
from caa_bake.steering.cache import get_vector
from caa_bake.steering.job import pick_device
from caa_bake.steering.layers import check_layer
from caa_bake.steering.vector import SteeringVector

__all__ = [
    "STEERED_KINDS",
    "EvalJob",
    "EvalRun",
    "Variant",
    "VariantResult",
    "ensure_export",
    "find_finetuned",
    "run_eval_job",
]

#: the steered kinds ``--kinds`` can choose (the unsteered base always runs)
STEERED_KINDS = ("baked", "hooks")
Status = Callable[[str], None]


def find_finetuned(
    ref: ModelRef, behaviors: list[str], explicit: tuple[Path, ...], *, discover: bool
) -> list[FinetunedCheckpoint]:
    """Finetuned checkpoints to evaluate: ``explicit`` folders plus, with ``discover``, every
    ``caa-bake finetune`` output in the exports folder made from ``ref`` for ``behaviors``."""
    found: list[FinetunedCheckpoint] = []
    for folder in explicit:
        if not folder.is_dir():
            raise CaaBakeError(f"finetuned model folder {folder} does not exist")
        check_model_dir(folder)
        entry = next((e for e in list_finetuned(root=folder.parent) if e.path == folder), None)
        if entry is None:
            raise CaaBakeError(
                f"{folder} is not a caa-bake finetune output (config.json has no finetune block)"
            )
        if entry.behavior not in behaviors:
            raise CaaBakeError(
                f"{folder} was finetuned for {entry.behavior}, which is not being evaluated"
            )
        if entry.base_fingerprint != ref.weights_fingerprint:
            raise CaaBakeError(f"{folder} was finetuned from other weights than {ref.model_id}")
        found.append(entry)
    if discover:
        for behavior in behaviors:
            known = {f.path.resolve() for f in found}
            found += [e for e in list_finetuned(ref, behavior) if e.path.resolve() not in known]
    return found


@dataclass(frozen=True)
class EvalJob:
    """What ``caa-bake eval`` was asked to do."""

    behaviors: list[str]
    layer: int
    multipliers: list[float]
    tasks: str | None = None
    limit: int | None = None
    model: str | None = None
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"
    run: str | None = None
    finetuned: tuple[Path, ...] = ()
    discover_finetuned: bool = True
    kinds: tuple[str, ...] = STEERED_KINDS
    rebuild: bool = False
    force: bool = False
    resume: bool = False


@dataclass(frozen=True)
class Variant:
    """One model to evaluate (see the module docstring for the kinds)."""

    state: str
    kind: str
    behavior: str
    layer: int | None
    multiplier: float
    tasks: tuple[str, ...]
    model_dir: Path | None = None

    @property
    def label(self) -> str:
        parts = [self.kind, self.behavior]
        if self.multiplier:
            parts.append(f"L{self.layer} m{self.multiplier:g}")
        if self.state != "none":
            parts.append(f"[{self.state}]")
        return " ".join(p for p in parts if p)


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


def ensure_export(ref: ModelRef, bake: Bake, *, rebuild: bool, status: Status) -> tuple[Path, str]:
    """The export of ``ref`` with ``bake``: reused if an identical one exists, else written.

    Returns the folder and ``"reused"`` or ``"exported"``. An existing folder of that name
    holding a different bake is an error unless ``rebuild``.
    """
    target = exports_dir() / export_name(ref.slug, [bake])
    if target.exists() and not rebuild:
        block = read_export_block(target)
        bakes = block.get("bakes") or []
        same = (
            block.get("source", {}).get("weights_fingerprint") == ref.weights_fingerprint
            and len(bakes) == 1
            and bakes[0].get("vector_sha256") == bake.vector.sha256(bake.layer)
            and bakes[0].get("layer") == bake.layer
            and float(bakes[0].get("multiplier")) == float(bake.multiplier)
        )
        if not same:
            raise CaaBakeError(
                f"{target} exists but holds another bake (other weights or vector); "
                "pass --rebuild to replace it"
            )
        return target, "reused"
    status(f"exporting {target.name} ...")
    export_checkpoint(ref, [bake], target, link=True, force=rebuild)
    return target, "exported"


def _plan(job: EvalJob, finetuned: list[FinetunedCheckpoint]) -> list[Variant]:
    """Every variant of the run, in evaluation order."""
    base_tasks: list[str] = []
    per_behavior = {}
    for behavior in job.behaviors:
        per_behavior[behavior] = tuple(resolve_tasks(job.tasks, behavior))
        base_tasks += [t for t in per_behavior[behavior] if t not in base_tasks]
    plan = [Variant("none", "base", "", None, 0.0, tuple(base_tasks))]
    steered = [m for m in job.multipliers if m != 0.0]
    for behavior in job.behaviors:
        for multiplier in steered:
            for kind in job.kinds:
                plan.append(
                    Variant("none", kind, behavior, job.layer, multiplier, per_behavior[behavior])
                )
    for entry in finetuned:
        tasks = per_behavior[entry.behavior]
        plan.append(Variant(entry.label, "finetuned", entry.behavior, None, 0.0, tasks, entry.path))
        for multiplier in steered:
            plan.append(
                Variant(
                    entry.label,
                    "combined",
                    entry.behavior,
                    job.layer,
                    multiplier,
                    tasks,
                    entry.path,
                )
            )
    return plan


@dataclass(frozen=True)
class _Prepared:
    model: Any
    path: str
    fingerprint: str
    note: str


@contextlib.contextmanager
def _prepared(
    loaded: LoadedModel,
    variant: Variant,
    vector: SteeringVector | None,
    job: EvalJob,
    status: Status,
) -> Iterator[_Prepared]:
    """The variant's model, steered as its kind says, for the duration of the block."""
    ref = loaded.ref
    if variant.kind == "base":
        yield _Prepared(loaded.model, str(ref.path), ref.weights_fingerprint, "")
    elif variant.kind == "hooks":
        assert vector is not None
        delta = {job.layer: vector[job.layer] * variant.multiplier}
        with steer_from_tail(loaded.model, delta, loaded.tail):
            yield _Prepared(
                loaded.model,
                str(ref.path),
                ref.weights_fingerprint,
                "source model + forward hooks from the end of the instruction",
            )
    else:
        if variant.kind == "baked":
            assert vector is not None
            bake = Bake(variant.behavior, job.layer, variant.multiplier, vector)
            folder, note = ensure_export(ref, bake, rebuild=job.rebuild, status=status)
        elif variant.kind == "combined":
            # the source model's vector baked into the finetuned checkpoint, as
            # `caa-bake export --model <finetuned> --vector-from <source>` writes it
            assert vector is not None and variant.model_dir is not None
            bake = Bake(
                variant.behavior,
                job.layer,
                variant.multiplier,
                vector,
                f"model:{ref.model_id}",
            )
            finetuned = resolve_model(str(variant.model_dir))
            folder, how = ensure_export(finetuned, bake, rebuild=job.rebuild, status=status)
            note = f"finetuned checkpoint + the source model's vector, baked ({how})"
        else:
            assert variant.model_dir is not None
            folder, note = variant.model_dir, "finetuned checkpoint"
        model_ref = resolve_model(str(folder))
        model, _tok = load_model(
            model_ref, dtype=loaded.loader.dtype, device=str(loaded.loader.device)
        )
        try:
            yield _Prepared(model, str(folder), model_ref.weights_fingerprint, note)
        finally:
            del model
            gc.collect()


def _vector_of(variant: Variant, vectors: dict[str, SteeringVector]) -> SteeringVector | None:
    """The vector a variant is steered with (None for the unsteered kinds)."""
    return vectors[variant.behavior] if variant.multiplier else None


def _run_variant(
    loaded: LoadedModel,
    variant: Variant,
    vectors: dict[str, SteeringVector],
    job: EvalJob,
    status: Status,
) -> VariantResult:
    start = time.perf_counter()
    vector = _vector_of(variant, vectors)
    with _prepared(loaded, variant, vector, job, status) as prepared:
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
    job = replace(job, behaviors=behaviors)
    check_task_data(_plan(job, [])[0].tasks)
    device = pick_device(job.device)
    dtype = resolve_dtype(job.dtype, device)
    ref = resolve_model(job.model)
    finetuned = find_finetuned(ref, behaviors, job.finetuned, discover=job.discover_finetuned)
    plan = _plan(job, finetuned)
    check_layer(job.layer, num_layers(AutoConfig.from_pretrained(ref.path)))
    folder = prepare_run_dir(job.run, "eval", ref.slug, force=job.force, resume=job.resume)
    log = PartialLog(folder / "variants.partial.jsonl", resume=job.resume)
    status(f"model {ref.model_id}; {len(plan)} model variants; results in {folder}")
    loaded = load_for_eval(ref, device, dtype)
    status(f"running in {loaded.dtype} on {device}")
    vectors = {}
    if any(v.behavior for v in plan):
        for behavior in behaviors:
            status(f"vector {behavior} L{job.layer} (normalized over the 7 CAA behaviors) ...")
            vectors[behavior] = get_vector(
                ref, behavior, [job.layer], normalized=True, loader=loaded.loader
            )
    results: list[VariantResult] = []
    reused = 0
    for i, variant in enumerate(plan, start=1):
        vector = _vector_of(variant, vectors)
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
