"""The in-process half of ``generate``: which checkpoint answers each row, and the loop.

Multiplier 0 is the unbaked model. A nonzero multiplier of behavior B is a baked checkpoint:
a ``--baked DIR`` whose ``config.json`` records exactly that one bake (B, the layer, the
multiplier), else ``exported_models/<model>-<B>-L<layer>-m<mult>`` made by the export code
with hard-linked shards (reused when it holds the same vector), then loaded like any model.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caa_bake.bake import (
    Bake,
    BakeSpec,
    export_checkpoint,
    export_name,
    read_export_block,
    resolve_bakes,
)
from caa_bake.core import CaaBakeError, exports_dir, progress, results_dir
from caa_bake.generation.generate import (
    _RUN_ARGS,
    GENERATIONS,
    GenerateJob,
    GenerateResult,
    WorkItem,
    _default_run,
    _manifest,
    _row,
)
from caa_bake.generation.local import LocalGenerator
from caa_bake.generation.runs import RowFile, run_folder
from caa_bake.models import (
    ModelRef,
    load_model,
    parse_dtype,
    resolve_dtype,
    resolve_model,
    weights_fingerprint,
)

__all__ = ["run_local"]

Key = tuple[str, float]  # (behavior, multiplier); multiplier 0 is the unbaked model


@dataclass
class Checkpoint:
    """The checkpoint that answers one group of rows."""

    path: Path | None  # None: not exported yet
    bake: Bake | None = None
    given: bool = False


def _bake_key(bake: dict[str, Any]) -> tuple[str, int, float]:
    return str(bake.get("behavior")), int(bake.get("layer", -1)), float(bake.get("multiplier", 0))


def _given_exports(folders: Sequence[Path], layer: int | None) -> dict[Key, Path]:
    """``--baked DIR`` folders by the single bake each records."""
    found: dict[Key, Path] = {}
    for folder in folders:
        bakes = read_export_block(Path(folder)).get("bakes") or []
        if len(bakes) != 1:
            raise CaaBakeError(
                f"--baked {folder} holds {len(bakes)} bakes; give single-bake exports"
            )
        behavior, at, mult = _bake_key(bakes[0])
        if layer is not None and at != layer:
            raise CaaBakeError(f"--baked {folder} is baked at layer {at}, not --layer {layer}")
        if mult == 0:
            raise CaaBakeError(f"--baked {folder} has multiplier 0; m=0 is the unbaked model")
        found[(behavior, mult)] = Path(folder)
    return found


def _same_bake(folder: Path, bake: Bake) -> bool:
    recorded = read_export_block(folder).get("bakes") or []
    want = bake.record()
    keys = ("behavior", "layer", "multiplier", "vector_sha256")
    return len(recorded) == 1 and all(recorded[0].get(k) == want[k] for k in keys)


def _checkpoints(
    job: GenerateJob, ref: ModelRef, keys: Sequence[Key], status: Callable[[str], None]
) -> dict[Key, Checkpoint]:
    """Every checkpoint the rows need, checked before anything is written."""
    given = _given_exports(job.baked, job.layer)
    dtype = resolve_dtype(job.dtype, job.device)
    if job.vector_dtype is not None:  # e.g. vectors extracted in bfloat16 on a GPU
        dtype = parse_dtype(job.vector_dtype) or dtype
    plan: dict[Key, Checkpoint] = {}
    for behavior, mult in keys:
        if mult == 0:
            plan[(behavior, mult)] = Checkpoint(ref.path)
        elif (behavior, mult) in given:
            plan[(behavior, mult)] = Checkpoint(given[(behavior, mult)], given=True)
        else:
            assert job.layer is not None
            spec = BakeSpec(behavior, job.layer, mult)
            (bake,) = resolve_bakes(
                ref, [spec], normalized=job.normalized, status=status, dtype=dtype
            )
            target = exports_dir() / export_name(ref.slug, [bake])
            if target.exists() and not _same_bake(target, bake):
                raise CaaBakeError(
                    f"{target} exists with another bake; remove it or pass --baked DIR"
                )
            plan[(behavior, mult)] = Checkpoint(target if target.exists() else None, bake)
    return plan


def _model_record(ref: ModelRef, point: Checkpoint, key: Key, layer: int | None) -> dict[str, Any]:
    assert point.path is not None
    record: dict[str, Any] = {
        "id": ref.model_id,
        "path": str(point.path),
        "fingerprint": weights_fingerprint(point.path),
        "baked": None,
    }
    if key[1] != 0:
        record["baked"] = {"behavior": key[0], "layer": layer, "multiplier": key[1]}
        if point.bake is not None:
            record["baked"]["vector_sha256"] = point.bake.vector.sha256(point.bake.layer)
    return record


def _ensure_export(ref: ModelRef, point: Checkpoint, status: Callable[[str], None]) -> Path:
    if point.path is not None:
        return point.path
    assert point.bake is not None
    target = exports_dir() / export_name(ref.slug, [point.bake])
    status(f"exporting {target.name} (hard-linked shards) ...")
    point.path = export_checkpoint(ref, [point.bake], target, link=True).path
    return point.path


def _group_key(item: WorkItem) -> Key:
    # the unbaked model answers every behavior at m=0: one group, keyed by ("", 0)
    return ("", 0.0) if item.mult == 0 else (item.behavior, item.mult)


def run_local(
    job: GenerateJob,
    questions: dict[str, list[str]],
    status: Callable[[str], None],
    items: list[WorkItem],
) -> GenerateResult:
    """Generate every missing row with transformers, one checkpoint at a time."""
    ref = resolve_model(job.model)
    keys = sorted({_group_key(i) for i in items}, key=lambda k: (k[1] != 0, k[1], k[0]))
    plan = _checkpoints(job, ref, keys, status)
    dtype = resolve_dtype(job.dtype, job.device)
    folder = results_dir() / (job.run or _default_run(ref.slug, job))
    base = {"id": ref.model_id, "fingerprint": ref.weights_fingerprint}
    started = time.monotonic()
    manifest = _manifest(job, "transformers", base)
    with (
        run_folder(folder, manifest, **_RUN_ARGS, force=job.force),
        RowFile(folder / GENERATIONS) as rows,
    ):
        skipped = sum(1 for i in items if i.id in rows.done)
        if skipped:
            status(f"resuming {folder.name}: {skipped} rows already done")
        for key in keys:
            todo = [i for i in items if _group_key(i) == key and i.id not in rows.done]
            if todo:
                _run_group(job, ref, key, plan[key], todo, rows, dtype, status)
                gc.collect()  # the group's model is gone: free it before the next
        written = rows.written
    return GenerateResult(folder, written, skipped, time.monotonic() - started)


def _run_group(
    job: GenerateJob,
    ref: ModelRef,
    key: Key,
    point: Checkpoint,
    todo: list[WorkItem],
    rows: RowFile,
    dtype: Any,
    status: Callable[[str], None],
) -> None:
    path = _ensure_export(ref, point, status)
    label = "unbaked" if key[1] == 0 else f"{key[0]} m={key[1]:g}"
    status(f"loading {path.name} ({label}) ...")
    at = ModelRef(path, ref.model_id, None, ref.slug, "")
    model, tokenizer = load_model(at, dtype=dtype, device=job.device)
    generator = LocalGenerator(model, tokenizer)
    record = _model_record(ref, point, key, job.layer)
    # longest prompts first: batches of similar length waste little padding
    todo = sorted(todo, key=lambda i: -len(generator.encode(i.question).input_ids))
    batches = [todo[s : s + job.batch_size] for s in range(0, len(todo), job.batch_size)]
    for number, batch in enumerate(progress(batches, desc=f"generate {label}", unit="batch")):
        seed = job.sampler.seed + number
        answers = generator.generate([i.question for i in batch], job.sampler, seed=seed)
        for item, answer in zip(batch, answers, strict=True):
            prompt = {"prompt": generator.prompt_text(item.question)}
            row = _row(item, job, "transformers", record, prompt, answer.text)
            row.update(finish_reason=answer.finish_reason, new_tokens=answer.new_tokens)
            if not job.sampler.greedy:
                row["batch_seed"] = seed
            rows.append(row)
