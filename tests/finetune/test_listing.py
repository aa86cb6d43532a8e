"""``list_finetuned``: finetuned checkpoints found by their provenance block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caa_bake.core.errors import CaaBakeError
from caa_bake.finetune.listing import list_finetuned, read_finetune_block
from caa_bake.models.loading import ModelRef


def _folder(root: Path, name: str, block: object) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "caa_bake": block}))
    return folder


def _block(
    behavior: str, direction: str, fingerprint: str, lora: bool = False
) -> dict[str, object]:
    return {
        "kind": "finetune",
        "behavior": behavior,
        "direction": direction,
        "base": {"model_id": "base", "weights_fingerprint": fingerprint},
        "hyperparameters": {"lora": {"r": 4} if lora else None},
    }


def _ref(fingerprint: str) -> ModelRef:
    return ModelRef(Path("/base"), "base", None, "base", fingerprint)


def test_lists_by_base_behavior_and_direction(tmp_path: Path) -> None:
    neg = _folder(tmp_path, "m-ft-refusal-neg", _block("refusal", "neg", "f1"))
    pos = _folder(tmp_path, "m-ft-refusal-pos-lora", _block("refusal", "pos", "f1", lora=True))
    syc = _folder(tmp_path, "m-ft-sycophancy-pos", _block("sycophancy", "pos", "f1"))
    _folder(tmp_path, "other-ft-refusal-pos", _block("refusal", "pos", "f2"))
    _folder(tmp_path, ".m-ft-refusal-pos.tmp-1", _block("refusal", "pos", "f1"))
    _folder(tmp_path, "m-refusal-L13-m1", {"format": 1, "bakes": []})
    (tmp_path / "no-config").mkdir()

    found = list_finetuned(_ref("f1"), root=tmp_path)
    assert [(f.path, f.behavior, f.direction, f.label) for f in found] == [
        (neg, "refusal", "neg", "ft-neg"),
        (pos, "refusal", "pos", "ft-pos-lora"),
        (syc, "sycophancy", "pos", "ft-pos"),
    ]
    assert [f.path for f in list_finetuned(_ref("f1"), "refusal", "pos", root=tmp_path)] == [pos]
    assert len(list_finetuned(None, "refusal", root=tmp_path)) == 3
    assert list_finetuned(_ref("f3"), root=tmp_path) == []


def test_labels_name_what_differs_from_the_paper(tmp_path: Path) -> None:
    def label(**hyperparameters: object) -> str:
        block = {**_block("refusal", "pos", "f1"), "hyperparameters": hyperparameters}
        folder = _folder(tmp_path, f"m{len(list(tmp_path.iterdir()))}", block)
        return next(f.label for f in list_finetuned(root=tmp_path) if f.path == folder)

    assert label(optimizer="sgd", learning_rate=1e-4, epochs=1, max_steps=None) == "ft-pos"
    assert label(optimizer="adamw", learning_rate=1e-5, epochs=1) == "ft-pos-adamw-lr1e-05"
    assert (
        label(optimizer="sgd", learning_rate=1e-4, epochs=3, max_steps=12) == "ft-pos-3ep-12steps"
    )
    assert label(lora={"r": 4}, optimizer="sgd", learning_rate=1e-3) == "ft-pos-lora-sgd-lr0.001"


def test_block_reader_and_bad_arguments(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "x", _block("refusal", "pos", "f1"))
    assert read_finetune_block(folder) == _block("refusal", "pos", "f1")
    assert read_finetune_block(tmp_path / "missing") is None
    with pytest.raises(CaaBakeError, match="unknown behavior 'nope'"):
        list_finetuned(behavior="nope", root=tmp_path)
    with pytest.raises(CaaBakeError, match="unknown direction 'up'"):
        list_finetuned(direction="up", root=tmp_path)
    with pytest.raises(CaaBakeError, match="is not a folder"):
        list_finetuned(root=tmp_path / "missing")
