"""Turn ``caa-bake finetune`` options into a validated plan, before any rank starts.

Everything that can be wrong with the input is checked here, cheapest first: the direction,
the behavior, the numbers, ranks and GPUs, the optimizer, the DeepSpeed config, that
deepspeed (and peft for ``--lora``) are installed, that the data are pulled, the model, the
output folder, and finally that every prompt encodes with single-token answer letters.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from caa_bake.core import CaaBakeError
from caa_bake.data import check_behavior
from caa_bake.finetune.config import resolve_ds_config
from caa_bake.finetune.data import TrainExample, build_examples
from caa_bake.finetune.spec import (
    FinetuneSpec,
    LoraSettings,
    check_direction,
    check_optimizer,
    variant_parts,
)

__all__ = ["FinetunePlan", "FinetuneRequest", "cpu_count", "finetune_name", "plan_finetune"]


@dataclass(frozen=True)
class FinetuneRequest:
    """What the user asked for (the ``caa-bake finetune`` options)."""

    behavior: str
    direction: str
    model: str | None = None
    revision: str | None = None
    epochs: int = 1
    learning_rate: float = 1e-4
    optimizer: str = "sgd"
    batch_size: int = 1
    cpu_ranks: int | None = None
    gpus: int | None = None
    zero_stage: int | None = None
    deepspeed_config: Path | None = None
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    seed: int = 0
    max_steps: int | None = None
    out: Path | None = None
    force: bool = False
    dtype: str = "auto"


@dataclass(frozen=True)
class FinetunePlan:
    """A validated run: the spec every rank gets, the encoded examples, the output folder."""

    spec: FinetuneSpec
    examples: list[TrainExample]
    target: Path


def finetune_name(slug: str, behavior: str, direction: str, parts: Sequence[str] = ()) -> str:
    """``<model-slug>-ft-<behavior>-<pos|neg>``, then ``parts`` (see
    :func:`caa_bake.finetune.spec.variant_parts`), e.g. ``...-ft-refusal-pos-lora``."""
    return "-".join([f"{slug}-ft-{behavior}-{direction}", *parts])


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise CaaBakeError(f"{option} must be at least 1, got {value}")


def _check_numbers(request: FinetuneRequest) -> None:
    _positive(request.epochs, "--epochs")
    _positive(request.batch_size, "--batch-size")
    _positive(request.max_steps, "--max-steps")
    lr = request.learning_rate
    if not math.isfinite(lr) or lr <= 0:
        raise CaaBakeError(f"--lr must be a positive number, got {lr}")
    if request.lora:
        _positive(request.lora_r, "--lora-r")
        _positive(request.lora_alpha, "--lora-alpha")
        if not 0.0 <= request.lora_dropout < 1.0:
            raise CaaBakeError(f"--lora-dropout must be in [0, 1), got {request.lora_dropout}")


def _check_dtype(name: str) -> None:
    """Training runs in float32 (``auto``); half-precision weights are refused.

    With bf16 weights an SGD step of lr 1e-4 (the paper's setting) is below bf16's
    resolution (8 significant bits: ~0.4% of a weight) for almost every weight, so the update
    rounds away and training silently does nothing; fp16 loses most of it too. Mixed
    precision (half-precision compute with float32 master weights) is not implemented.
    """
    from caa_bake.models import dtype_name, parse_dtype

    dtype = parse_dtype(name)
    if dtype is not None and dtype_name(dtype) != "float32":
        raise CaaBakeError(
            f"finetune trains in float32 only: with {dtype_name(dtype)} weights most SGD "
            "updates (lr 1e-4) are below the dtype's resolution and round away; use --dtype "
            "float32 (or auto)"
        )


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _world(request: FinetuneRequest, external_world: int | None) -> tuple[int, str]:
    """(number of ranks, "cpu" or "cuda")."""
    if request.cpu_ranks is not None and request.gpus is not None:
        raise CaaBakeError("give either --cpu-ranks or --gpus, not both")
    _positive(request.cpu_ranks, "--cpu-ranks")
    _positive(request.gpus, "--gpus")
    if external_world is not None:
        asked = request.cpu_ranks or request.gpus
        if asked is not None and asked != external_world:
            raise CaaBakeError(
                f"the launcher started {external_world} ranks but {asked} were asked for"
            )
        cuda = request.cpu_ranks is None and _gpu_count() > 0
        return external_world, "cuda" if cuda else "cpu"
    if request.gpus is not None:
        found = _gpu_count()
        if found < request.gpus:
            have = "no GPU" if found == 0 else f"only {found} GPU(s)"
            raise CaaBakeError(
                f"--gpus {request.gpus}: this machine has {have} visible to torch; "
                f"train on CPU with --cpu-ranks {request.gpus} instead"
            )
        return request.gpus, "cuda"
    return request.cpu_ranks or 1, "cpu"


def _check_installed(lora: bool) -> None:
    if importlib.util.find_spec("deepspeed") is None:
        raise CaaBakeError("finetuning needs deepspeed: pip install 'caa-bake[finetune]'")
    if lora and importlib.util.find_spec("peft") is None:
        raise CaaBakeError("--lora needs peft: pip install 'caa-bake[finetune]'")


def _model_record(ref: object) -> dict[str, object]:
    from caa_bake.models import ModelRef

    assert isinstance(ref, ModelRef)
    try:
        raw = json.loads((ref.path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CaaBakeError(f"cannot read {ref.path / 'config.json'}: {exc}") from None
    if isinstance(raw, dict) and isinstance(raw.get("caa_bake"), dict):
        kind = raw["caa_bake"].get("kind", "export")
        raise CaaBakeError(
            f"{ref.path} is a caa-bake {kind} checkpoint; finetune the original base model"
        )
    return {
        "path": str(ref.path),
        "model_id": ref.model_id,
        "revision": ref.revision,
        "slug": ref.slug,
        "weights_fingerprint": ref.weights_fingerprint,
        "model_type": raw.get("model_type") if isinstance(raw, dict) else None,
        "architectures": raw.get("architectures") if isinstance(raw, dict) else None,
    }


def _context_length(config_file: Path) -> int | None:
    """The model's maximum sequence length from its config, if it states one."""
    raw = json.loads(config_file.read_text(encoding="utf-8"))
    for section in (raw, raw.get("text_config") or {}):
        for key in ("max_position_embeddings", "n_positions"):
            value = section.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _check_lengths(examples: list[TrainExample], context: int | None, behavior: str) -> None:
    longest = max(examples, key=lambda e: len(e.input_ids))
    if context is not None and len(longest.input_ids) > context:
        raise CaaBakeError(
            f"{behavior} item {longest.index} encodes to {len(longest.input_ids)} tokens, more "
            f"than the model's context of {context} tokens"
        )


def plan_finetune(request: FinetuneRequest, *, external_world: int | None = None) -> FinetunePlan:
    """Validate ``request`` and build the plan (no rank is started, nothing is written).

    ``external_world``: the world size when the ranks were started by an external launcher
    (``deepspeed`` / ``torchrun``) rather than by caa-bake.
    """
    from transformers import AutoTokenizer

    from caa_bake.bake import prepare_target
    from caa_bake.data import dataset_path, file_sha256, load_pairs
    from caa_bake.models import detect_style, resolve_model

    direction = check_direction(request.direction)
    behavior = check_behavior(request.behavior)
    _check_numbers(request)
    _check_dtype(request.dtype)
    world, device = _world(request, external_world)
    optimizer = check_optimizer(request.optimizer)
    ds_config = resolve_ds_config(
        request.deepspeed_config,
        request.zero_stage,
        micro_batch=request.batch_size,
        world_size=world,
    )
    _check_installed(request.lora)
    pairs = load_pairs(behavior, "generate")
    data_file = dataset_path(behavior, "generate")
    ref = resolve_model(request.model, revision=request.revision)
    base = _model_record(ref)
    parts = variant_parts(
        lora=request.lora,
        optimizer=optimizer,
        learning_rate=float(request.learning_rate),
        epochs=request.epochs,
        max_steps=request.max_steps,
    )
    name = finetune_name(ref.slug, behavior, direction, parts)
    from caa_bake.core import exports_dir

    target = prepare_target(
        request.out if request.out is not None else exports_dir() / name,
        force=request.force,
        protect=[ref.path],
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(ref.path))
    except (OSError, ValueError, KeyError) as exc:
        raise CaaBakeError(f"cannot load the tokenizer in {ref.path}: {exc}") from None
    style = detect_style(tokenizer)
    examples, letters = build_examples(tokenizer, pairs, direction, style)
    _check_lengths(examples, _context_length(ref.path / "config.json"), behavior)
    per_step = world * request.batch_size
    if len(examples) < per_step:
        raise CaaBakeError(
            f"{behavior} has {len(examples)} items, fewer than one step of {world} rank(s) x "
            f"batch {request.batch_size}"
        )
    spec = FinetuneSpec(
        behavior=behavior,
        direction=direction,
        base=base,
        data={
            "path": str(data_file),
            "file": data_file.name,
            "sha256": file_sha256(data_file),
            "items": len(examples),
            "items_per_epoch": len(examples) - len(examples) % per_step,
        },
        prompt_style=style,
        letters=letters,
        epochs=request.epochs,
        learning_rate=float(request.learning_rate),
        optimizer=optimizer,
        batch_size=request.batch_size,
        world_size=world,
        device="cuda" if device == "cuda" else "cpu",
        zero_stage=ds_config.stage,
        ds_config=dict(ds_config),
        ds_config_source=ds_config.source,
        out=str(target),
        lora=(
            LoraSettings(request.lora_r, request.lora_alpha, request.lora_dropout)
            if request.lora
            else None
        ),
        seed=request.seed,
        max_steps=request.max_steps,
        threads_per_rank=max(1, cpu_count() // world) if device == "cpu" else 1,
        launcher="external" if external_world is not None else "caa-bake",
    )
    return FinetunePlan(spec, examples, target)
