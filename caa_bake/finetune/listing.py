"""Find finetuned checkpoints by their ``caa_bake`` provenance block (for ``caa-bake eval``).

A checkpoint written by ``caa-bake finetune`` has ``config.json["caa_bake"]["kind"] ==
"finetune"``, and its block names the base model (id and weights fingerprint), the behavior
and the direction. :func:`list_finetuned` scans the exports folder for those made from a
given base model, optionally for one behavior / direction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caa_bake.core import CaaBakeError

if TYPE_CHECKING:
    from caa_bake.models import ModelRef

__all__ = ["FinetunedCheckpoint", "list_finetuned", "read_finetune_block"]


@dataclass(frozen=True)
class FinetunedCheckpoint:
    """One finetuned checkpoint folder and what its provenance says."""

    path: Path
    behavior: str
    direction: str
    base_model_id: str
    base_fingerprint: str
    lora: bool
    block: dict[str, Any]

    @property
    def label(self) -> str:
        """Short name for tables: ``ft-pos`` with the paper's hyperparameters (SGD, lr 1e-4,
        1 epoch), else with what differs: ``ft-neg-lora``, ``ft-pos-adamw-lr1e-05``,
        ``ft-pos-3ep``, ``ft-pos-100steps``."""
        from caa_bake.finetune.spec import variant_parts

        hp = self.block.get("hyperparameters") or {}
        parts = [f"ft-{self.direction}"]
        parts += variant_parts(
            lora=self.lora,
            optimizer=str(hp.get("optimizer", "sgd")),
            learning_rate=float(hp.get("learning_rate", 1e-4)),
            epochs=int(hp.get("epochs", 1)),
            max_steps=hp.get("max_steps"),
        )
        return "-".join(parts)


def read_finetune_block(folder: Path) -> dict[str, Any] | None:
    """The finetune provenance block of ``folder``'s config.json, or None if it has none."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    block = config.get("caa_bake") if isinstance(config, dict) else None
    if isinstance(block, dict) and block.get("kind") == "finetune":
        return block
    return None


def _entry(folder: Path, block: dict[str, Any]) -> FinetunedCheckpoint:
    base = block.get("base") or {}
    return FinetunedCheckpoint(
        path=folder,
        behavior=str(block.get("behavior") or ""),
        direction=str(block.get("direction") or ""),
        base_model_id=str(base.get("model_id") or ""),
        base_fingerprint=str(base.get("weights_fingerprint") or ""),
        lora=bool((block.get("hyperparameters") or {}).get("lora")),
        block=block,
    )


def list_finetuned(
    base: ModelRef | None = None,
    behavior: str | None = None,
    direction: str | None = None,
    *,
    root: Path | None = None,
) -> list[FinetunedCheckpoint]:
    """Finetuned checkpoints under ``root`` (default: the exports folder).

    Args:
        base: keep those trained from these weights (matched by weights fingerprint);
            None keeps all.
        behavior: keep one behavior (canonical name check applies).
        direction: keep ``pos`` or ``neg``.
        root: folder to scan (its direct subfolders).

    Returns:
        Sorted by behavior, direction, then folder name. Hidden (temporary) folders are
        skipped.
    """
    from caa_bake.core import exports_dir
    from caa_bake.data import check_behavior
    from caa_bake.finetune.spec import check_direction

    wanted_behavior = check_behavior(behavior) if behavior is not None else None
    wanted_direction = check_direction(direction) if direction is not None else None
    folder = Path(root) if root is not None else exports_dir()
    if not folder.is_dir():
        if root is not None:
            raise CaaBakeError(f"{folder} is not a folder")
        return []
    found = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        block = read_finetune_block(child)
        if block is None:
            continue
        entry = _entry(child, block)
        if base is not None and entry.base_fingerprint != base.weights_fingerprint:
            continue
        if wanted_behavior is not None and entry.behavior != wanted_behavior:
            continue
        if wanted_direction is not None and entry.direction != wanted_direction:
            continue
        found.append(entry)
    return sorted(found, key=lambda e: (e.behavior, e.direction, e.path.name))
