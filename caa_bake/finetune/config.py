"""The DeepSpeed config of a finetuning run: a shipped ZeRO file or the user's own.

caa-bake ships ``caa_bake/finetune/configs/zero2.json`` and ``zero3.json``. ``--deepspeed-config``
replaces them with any DeepSpeed JSON file. Either way caa-bake then fills in what it owns:

- the batch keys (``train_micro_batch_size_per_gpu`` = ``--batch-size``,
  ``gradient_accumulation_steps`` = 1, ``train_batch_size`` = batch x ranks); a file that
  sets them to other values is refused rather than silently overridden;
- ``zero_allow_untested_optimizer: true``, since the optimizer is a plain torch one
  (``--optimizer``), so the file must not have ``optimizer`` or ``scheduler`` sections;
- ``zero_optimization.stage`` when ``--zero-stage`` is given.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

from caa_bake.core import CaaBakeError

__all__ = ["ZERO_STAGES", "DeepSpeedConfig", "resolve_ds_config", "shipped_config_path"]

ZERO_STAGES: tuple[int, ...] = (0, 1, 2, 3)
DEFAULT_STAGE = 2
_OWNED = ("optimizer", "scheduler")


class DeepSpeedConfig(dict[str, Any]):
    """A DeepSpeed config dict plus where it came from (``source``) and its ZeRO stage."""

    def __init__(self, data: dict[str, Any], source: str) -> None:
        super().__init__(data)
        self.source = source

    @property
    def stage(self) -> int:
        """``zero_optimization.stage`` (0 when the section is absent)."""
        zero = self.get("zero_optimization") or {}
        return int(zero.get("stage", 0))


def shipped_config_path(stage: int) -> Path:
    """The packaged config for ``stage``: ``zero3.json`` for 3, else ``zero2.json``."""
    name = "zero3.json" if stage == 3 else "zero2.json"
    return Path(str(resources.files("caa_bake.finetune").joinpath("configs", name)))


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CaaBakeError(f"DeepSpeed config {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CaaBakeError(f"cannot read the DeepSpeed config {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CaaBakeError(f"DeepSpeed config {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CaaBakeError(f"DeepSpeed config {path} must be a JSON object")
    return data


def _check_stage(stage: Any, where: str) -> int:
    if isinstance(stage, bool) or not isinstance(stage, int) or stage not in ZERO_STAGES:
        raise CaaBakeError(f"ZeRO stage {stage!r} ({where}) is not one of 0, 1, 2, 3")
    return stage


def _set_owned(data: dict[str, Any], key: str, value: int, path: str) -> None:
    given = data.get(key)
    if given is not None and given != "auto" and given != value:
        raise CaaBakeError(
            f"DeepSpeed config {path} sets {key} = {given!r} but caa-bake needs {value} "
            "(from --batch-size and the number of ranks); remove the key from the file"
        )
    data[key] = value


def resolve_ds_config(
    path: Path | None, stage: int | None, *, micro_batch: int, world_size: int
) -> DeepSpeedConfig:
    """The config every rank passes to ``deepspeed.initialize``.

    Args:
        path: ``--deepspeed-config``, or None for the shipped file of ``stage``.
        stage: ``--zero-stage``, or None (shipped: 2; a user file: its own stage).
        micro_batch: samples per rank per step.
        world_size: number of ranks.
    """
    if stage is not None:
        _check_stage(stage, "--zero-stage")
    file = (
        Path(path).expanduser()
        if path is not None
        else shipped_config_path(DEFAULT_STAGE if stage is None else stage)
    )
    data = copy.deepcopy(_read(file))
    source = str(file) if path is not None else f"caa_bake/finetune/configs/{file.name}"
    for key in _OWNED:
        if key in data:
            raise CaaBakeError(
                f"DeepSpeed config {file} has an '{key}' section; caa-bake passes its own torch "
                "optimizer (--optimizer, --lr) without a scheduler: remove the section"
            )
    zero = data.setdefault("zero_optimization", {})
    if not isinstance(zero, dict):
        raise CaaBakeError(f"DeepSpeed config {file}: zero_optimization must be an object")
    if stage is not None:
        zero["stage"] = stage
    _check_stage(zero.setdefault("stage", 0), f"in {file}")
    _set_owned(data, "train_micro_batch_size_per_gpu", micro_batch, str(file))
    _set_owned(data, "gradient_accumulation_steps", 1, str(file))
    _set_owned(data, "train_batch_size", micro_batch * world_size, str(file))
    data["zero_allow_untested_optimizer"] = True
    return DeepSpeedConfig(data, source)
