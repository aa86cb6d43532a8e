"""``caa-bake sweep``: Δp_match against layer for each behavior and multiplier.

No checkpoint is exported per point: the source model is loaded once and steered with
forward hooks - at every position (``positions="all"``, exactly what a baked bias does,
:func:`caa_bake.steering.hooks.add_to_block_outputs`) or from the end of the instruction
(``"reference"``, :func:`caa_bake.evaluation.reference_hooks.steer_from_tail`). Each point runs the
behavior's ``caa_ab_<behavior>`` lm-eval task on the same in-memory ``HFLM``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
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
from caa_bake.evaluation.reference_hooks import steer_from_tail
from caa_bake.evaluation.report import write_sweep_report
from caa_bake.evaluation.tables import SweepPoint, best_layers
from caa_bake.evaluation.tasks import ab_task, check_task_data, run_tasks
from caa_bake.models import dtype_name, num_layers, parse_dtype, resolve_dtype, resolve_model
from caa_bake.steering import (
    add_to_block_outputs,
    get_vector,
    normalization_members,
    parse_layers,
    pick_device,
)

__all__ = ["POSITIONS", "SweepJob", "SweepRun", "run_sweep_job"]

POSITIONS = ("all", "reference")
Status = Callable[[str], None]


@dataclass(frozen=True)
class SweepJob:
    """What ``caa-bake sweep`` was asked to do."""

    behaviors: list[str]
    layers: str = "all"
    multipliers: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    limit: int | None = None
    model: str | None = None
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"
    #: dtype of the cached vectors to use (e.g. bfloat16 ones from a GPU run); None: ``dtype``
    vector_dtype: str | None = None
    positions: str = "all"
    run: str | None = None
    force: bool = False
    resume: bool = False
    normalize_with: tuple[str, ...] | None = None


@dataclass
class SweepRun:
    """A finished sweep: its points, the unsteered values, the best layers and the files."""

    folder: Path
    points: list[SweepPoint]
    base: dict[str, float]
    best: dict[str, int]
    files: list[Path]
    wall_s: float


def _steer(
    loaded: LoadedModel, positions: str, layer: int, delta: torch.Tensor
) -> contextlib.AbstractContextManager[None]:
    """All positions (= a baked bias) or the reference positions."""
    if positions == "all":
        return add_to_block_outputs(loaded.model, {layer: delta})
    return steer_from_tail(loaded.model, {layer: delta}, loaded.tail)


def _unsteered(
    lm: Any,
    loaded: LoadedModel,
    behaviors: list[str],
    log: PartialLog,
    common: dict[str, Any],
    limit: int | None,
    status: Status,
) -> dict[str, float]:
    """p_match of the unsteered model per behavior (from the log when resuming)."""
    base = {b: log.get({"unit": "base", "behavior": b, **common}) for b in behaviors}
    missing = [b for b, value in base.items() if value is None]
    if missing:
        status("unsteered model ...")
        found = run_tasks(lm, [ab_task(b) for b in missing], loaded.setup, limit=limit)
        for behavior in missing:
            base[behavior] = found[ab_task(behavior)].metrics["p_match"]
            log.add({"unit": "base", "behavior": behavior, **common}, base[behavior])
    return {b: float(v) for b, v in base.items()}


def run_sweep_job(job: SweepJob, *, status: Status) -> SweepRun:
    """Validate everything, sweep, write ``sweep.*`` into the run folder."""
    started = time.perf_counter()
    check_limit(job.limit)
    parse_dtype(job.dtype)
    check_vector_dtype(job.vector_dtype)
    if job.positions not in POSITIONS:
        raise CaaBakeError(f"unknown --positions {job.positions!r}; use all or reference")
    behaviors = check_behaviors(job.behaviors)
    members = normalization_members(job.normalize_with)
    mults = [m for m in job.multipliers if m != 0.0]
    if not mults:
        raise CaaBakeError("a sweep needs at least one non-zero multiplier (e.g. --mults -1,1)")
    tasks = [ab_task(b) for b in behaviors]
    check_task_data(tasks)
    device = pick_device(job.device)
    dtype = resolve_dtype(job.dtype, device)
    ref = resolve_model(job.model)
    layers = parse_layers(job.layers, num_layers(AutoConfig.from_pretrained(ref.path)))
    folder = prepare_run_dir(job.run, "sweep", ref.slug, force=job.force, resume=job.resume)
    log = PartialLog(folder / "sweep.partial.jsonl", resume=job.resume)
    total = len(behaviors) * len(layers) * len(mults)
    status(
        f"model {ref.model_id} ({dtype_name(dtype)} on {device}); layers {layers}; "
        f"{total} points; results in {folder}"
    )
    if len(log):
        status(f"resuming: {len(log)} finished units found")
    loaded = load_for_eval(ref, device, dtype)
    lm = make_lm(loaded.model, loaded.tokenizer, job.batch_size)
    common = {
        "model": ref.weights_fingerprint,
        "positions": job.positions,
        "limit": job.limit,
        "dtype": dtype_name(dtype),
        "eval_tasks": tasks_sha256(),
    }
    base = _unsteered(lm, loaded, behaviors, log, common, job.limit, status)
    vectors_from = vector_loader(loaded, job.vector_dtype)
    vectors = {}
    for behavior in behaviors:
        status(
            f"vectors {behavior} at {len(layers)} layers "
            f"(normalized against {describe_set(members)})"
        )
        vectors[behavior] = get_vector(
            ref,
            behavior,
            layers,
            normalized=True,
            loader=vectors_from,
            normalize_with=job.normalize_with,
        )
    points: list[SweepPoint] = []
    for behavior in behaviors:
        for layer in layers:
            for mult in mults:
                key = {
                    "unit": "point",
                    "behavior": behavior,
                    "layer": layer,
                    "multiplier": mult,
                    "vector": vectors[behavior].sha256(layer),
                    **common,
                }
                stored = log.get(key)
                if stored is not None:
                    points.append(SweepPoint(**stored))
                    continue
                delta = vectors[behavior][layer] * mult
                with _steer(loaded, job.positions, layer, delta):
                    result = run_tasks(lm, [ab_task(behavior)], loaded.setup, limit=job.limit)
                task = result[ab_task(behavior)]
                point = SweepPoint(
                    behavior=behavior,
                    layer=layer,
                    multiplier=mult,
                    p_match=task.metrics["p_match"],
                    delta=task.metrics["p_match"] - base[behavior],
                    nonsense=task.metrics["nonsense"],
                    n=task.n,
                    dtype=dtype_name(dtype),
                )
                log.add(key, asdict(point))
                points.append(point)
                status(
                    f"[{len(points)}/{total}] {behavior} L{layer} m{mult:+g}: p_match "
                    f"{point.p_match:.3f} (Δ {point.delta:+.3f})"
                )
    wall = time.perf_counter() - started
    meta = provenance(loaded, tasks)
    meta.update(
        {
            "layers": layers,
            "multipliers": mults,
            "behaviors": behaviors,
            "positions": job.positions,
            "limit": job.limit,
            "batch_size": job.batch_size,
            "normalization_set": members,
            "behavior_data": behavior_provenance(behaviors),
            "vectors": {
                b: {str(layer): v.sha256(layer) for layer in layers} for b, v in vectors.items()
            },
            "vector_dataset_sha256": {
                b: v.metadata.get("dataset_sha256", "") for b, v in vectors.items()
            },
            "vector_dtype": {b: v.extraction_dtype for b, v in vectors.items()},
            "wall_s": wall,
        }
    )
    files = write_sweep_report(folder, meta=meta, points=points, base=base)
    return SweepRun(folder, points, base, best_layers(points), files, wall)
