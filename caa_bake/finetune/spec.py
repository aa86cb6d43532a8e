"""The resolved description of one finetuning run, shared by the launcher and every rank.

:class:`FinetuneSpec` holds everything a rank needs (model folder, data, hyperparameters,
DeepSpeed config, world size) after the launcher has validated the user's options. It is
written to a JSON job file that each rank reads, and most of it is copied into the
checkpoint's ``caa_bake`` provenance block.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from caa_bake.core import CaaBakeError

__all__ = [
    "DIRECTIONS",
    "OPTIMIZERS",
    "Direction",
    "FinetuneSpec",
    "LoraSettings",
    "Optimizer",
    "check_direction",
    "check_optimizer",
    "variant_parts",
]

Direction = Literal["pos", "neg"]
Optimizer = Literal["sgd", "adamw"]
DIRECTIONS: tuple[str, ...] = get_args(Direction)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)


def check_direction(direction: str) -> Direction:
    """``pos`` (train towards the matching answer) or ``neg`` (the non-matching one)."""
    value = direction.strip().lower()
    if value == "pos":
        return "pos"
    if value == "neg":
        return "neg"
    raise CaaBakeError(
        f"unknown direction '{direction}'; valid: pos (train towards the behavior-matching "
        "answer), neg (towards the non-matching answer)"
    )


def check_optimizer(name: str) -> Optimizer:
    """``sgd`` (the paper's) or ``adamw``."""
    value = name.strip().lower()
    if value == "sgd":
        return "sgd"
    if value == "adamw":
        return "adamw"
    raise CaaBakeError(f"unknown optimizer '{name}'; valid: {', '.join(OPTIMIZERS)}")


def variant_parts(
    *,
    lora: bool,
    optimizer: str = "sgd",
    learning_rate: float = 1e-4,
    epochs: int = 1,
    max_steps: int | None = None,
) -> list[str]:
    """Name parts for what differs from the paper's setting (SGD, lr 1e-4, 1 epoch, full):
    e.g. ``["lora", "adamw", "lr1e-05", "3ep", "100steps"]``; empty for the paper's."""
    parts = ["lora"] if lora else []
    if optimizer != "sgd" or learning_rate != 1e-4:
        parts += [optimizer, f"lr{learning_rate:g}"]
    if epochs != 1:
        parts.append(f"{epochs}ep")
    if max_steps:
        parts.append(f"{max_steps}steps")
    return parts


@dataclass(frozen=True)
class LoraSettings:
    """peft LoRA adapter settings; the adapter is merged into the weights before saving."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str = "all-linear"


@dataclass(frozen=True)
class FinetuneSpec:
    """One validated finetuning run.

    Attributes:
        behavior: canonical behavior name (its generate split is the training data).
        direction: ``pos`` trains towards the matching letter, ``neg`` towards the other one.
        base: the base model: ``path``, ``model_id``, ``revision``, ``slug``,
            ``weights_fingerprint``, ``model_type``, ``architectures``.
        data: ``path``, ``file``, ``sha256`` and ``items`` of the training file.
        prompt_style: how prompts are rendered (see :mod:`caa_bake.models.prompts`).
        letters: answer letter -> token id, as it follows ``(``.
        epochs / learning_rate / optimizer / batch_size: per-rank micro-batch, as the options.
        world_size: number of ranks; ``device`` "cpu" (gloo) or "cuda" (nccl).
        zero_stage / ds_config / ds_config_source: the DeepSpeed config every rank uses.
        lora: LoRA settings, or None for full finetuning.
        seed: shuffling and initialization seed (the same on every rank).
        max_steps: stop after this many optimizer steps (None: all epochs).
        threads_per_rank: torch CPU threads of each rank.
        out: the final checkpoint folder.
        launcher: "caa-bake" (ranks spawned by ``caa-bake finetune``) or "external".
    """

    behavior: str
    direction: Direction
    base: dict[str, Any]
    data: dict[str, Any]
    prompt_style: str
    letters: dict[str, int]
    epochs: int
    learning_rate: float
    optimizer: Optimizer
    batch_size: int
    world_size: int
    device: Literal["cpu", "cuda"]
    zero_stage: int
    ds_config: dict[str, Any]
    ds_config_source: str
    out: str
    lora: LoraSettings | None = None
    seed: int = 0
    max_steps: int | None = None
    threads_per_rank: int = 1
    launcher: str = "caa-bake"

    @property
    def backend(self) -> str:
        """The torch.distributed backend: gloo on CPU, nccl on GPUs."""
        return "nccl" if self.device == "cuda" else "gloo"

    @property
    def target(self) -> str:
        """Which answer is the training target: "matching" (pos) or "not_matching" (neg)."""
        return "matching" if self.direction == "pos" else "not_matching"

    def to_json(self) -> str:
        """The spec as JSON (inverse of :meth:`from_json`)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FinetuneSpec:
        """Parse :meth:`to_json` output."""
        raw = json.loads(text)
        lora = raw.pop("lora", None)
        return cls(**raw, lora=LoraSettings(**lora) if lora is not None else None)

    def save(self, path: Path) -> None:
        """Write the spec to ``path``."""
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> FinetuneSpec:
        """Read a spec written by :meth:`save`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
