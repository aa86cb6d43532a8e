"""The source checkpoint's config: read, refused when not bakeable, its block count and width."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import build_model

from caa_bake.bake.source import load_source_config, model_dims
from caa_bake.core.errors import CaaBakeError


def test_config_and_dims_of_a_tiny_llama(tmp_path: Path) -> None:
    src = build_model("llama", tmp_path / "src", tokenizer=False)
    raw, resolved = load_source_config(src)
    assert raw["model_type"] == "llama"
    assert model_dims(resolved) == (4, 32)


def test_bad_folders_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CaaBakeError, match=r"has no config\.json: not a Hugging Face model folder"):
        load_source_config(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(CaaBakeError, match="is not a JSON object"):
        load_source_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "nope"}), encoding="utf-8")
    with pytest.raises(CaaBakeError, match="unsupported architecture 'nope'"):
        load_source_config(tmp_path)
