"""The source checkpoint of an export: what it must provide and how its config is read.

:func:`load_source_config` refuses an architecture without a bake rule before transformers
parses the config; :func:`model_dims` gives the number of blocks and the hidden size that
bakes are checked against.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from caa_bake.bake.architectures import check_supported
from caa_bake.core import CaaBakeError

__all__ = ["SourceModel", "load_source_config", "model_dims"]


class SourceModel(Protocol):
    """What an export needs to know about its source (``caa_bake.models.loading.ModelRef`` fits)."""

    @property
    def path(self) -> Path: ...
    @property
    def model_id(self) -> str: ...
    @property
    def revision(self) -> str | None: ...
    @property
    def slug(self) -> str: ...
    @property
    def weights_fingerprint(self) -> str: ...


def load_source_config(folder: Path) -> tuple[dict[str, Any], Any]:
    """``(raw config.json dict, resolved transformers config)`` of a checkpoint folder.

    An architecture without a bake rule is refused before transformers parses the config.
    """
    path = Path(folder) / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CaaBakeError(
            f"{folder} has no config.json: not a Hugging Face model folder"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CaaBakeError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise CaaBakeError(f"{path} is not a JSON object")
    check_supported(str(raw.get("model_type") or ""))
    from transformers import AutoConfig

    try:
        resolved = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CaaBakeError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None
    return raw, resolved


def model_dims(resolved: Any) -> tuple[int, int]:
    """``(number of blocks, hidden size)`` of a resolved transformers config."""
    from caa_bake.models import hidden_size, num_layers

    return num_layers(resolved), hidden_size(resolved)
