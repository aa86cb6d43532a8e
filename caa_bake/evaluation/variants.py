"""The variants of ``caa-bake eval``: which models one run evaluates, and how each is built.

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

Multiplier 0 is not re-evaluated: no steered variant is planned for it (its column shows the
unsteered model of the state).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caa_bake.bake import Bake, export_checkpoint, export_name, read_export_block
from caa_bake.core import CaaBakeError, exports_dir
from caa_bake.evaluation.common import LoadedModel
from caa_bake.evaluation.reference_hooks import steer_from_tail
from caa_bake.evaluation.tasks import resolve_tasks
from caa_bake.finetune import FinetunedCheckpoint, list_finetuned
from caa_bake.models import ModelRef, check_model_dir, load_model, resolve_model
from caa_bake.steering import SteeringVector

__all__ = [
    "STEERED_KINDS",
    "EvalJob",
    "PreparedModel",
    "Status",
    "Variant",
    "ensure_export",
    "find_finetuned",
    "plan_variants",
    "prepared_model",
    "vector_of",
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
    #: dtype of the cached vectors to use (e.g. bfloat16 ones from a GPU run); None: ``dtype``
    vector_dtype: str | None = None
    run: str | None = None
    finetuned: tuple[Path, ...] = ()
    discover_finetuned: bool = True
    kinds: tuple[str, ...] = STEERED_KINDS
    rebuild: bool = False
    force: bool = False
    resume: bool = False
    normalize_with: tuple[str, ...] | None = None


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


def plan_variants(job: EvalJob, finetuned: list[FinetunedCheckpoint]) -> list[Variant]:
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
class PreparedModel:
    """A variant's model while it is evaluated, with what identifies it in the results."""

    model: Any
    path: str
    fingerprint: str
    note: str


@contextlib.contextmanager
def prepared_model(
    loaded: LoadedModel,
    variant: Variant,
    vector: SteeringVector | None,
    job: EvalJob,
    status: Status,
) -> Iterator[PreparedModel]:
    """The variant's model, steered as its kind says, for the duration of the block."""
    ref = loaded.ref
    if variant.kind == "base":
        yield PreparedModel(loaded.model, str(ref.path), ref.weights_fingerprint, "")
    elif variant.kind == "hooks":
        assert vector is not None
        delta = {job.layer: vector[job.layer] * variant.multiplier}
        with steer_from_tail(loaded.model, delta, loaded.tail):
            yield PreparedModel(
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
            yield PreparedModel(model, str(folder), model_ref.weights_fingerprint, note)
        finally:
            del model
            gc.collect()


def vector_of(variant: Variant, vectors: dict[str, SteeringVector]) -> SteeringVector | None:
    """The vector a variant is steered with (None for the unsteered kinds)."""
    return vectors[variant.behavior] if variant.multiplier else None
