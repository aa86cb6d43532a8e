"""``caa_bake.finetune.listing``: finetuned checkpoints found by their provenance block.

The folders hold hand-written ``config.json`` files shaped like the block
``caa_bake.finetune.run.provenance`` writes (``kind: "finetune"``, ``base``, hyperparameters...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from caa_bake.core.errors import CaaBakeError
from caa_bake.finetune.listing import FinetunedCheckpoint, list_finetuned, read_finetune_block
from caa_bake.models.loading import ModelRef

FP_A = "a" * 64
FP_B = "b" * 64


def _block(
    behavior: str = "refusal",
    direction: str = "pos",
    fingerprint: str = FP_A,
    **hyperparameters: Any,
) -> dict[str, Any]:
    """A provenance block as ``caa-bake finetune`` writes it (the paper's settings)."""
    hp: dict[str, Any] = {
        "epochs": 1,
        "learning_rate": 1e-4,
        "optimizer": "sgd",
        "weight_decay": 0.0,
        "per_device_batch_size": 1,
        "global_batch_size": 2,
        "seed": 0,
        "max_steps": None,
        "training_dtype": "float32",
        "lora": None,
        **hyperparameters,
    }
    return {
        "kind": "finetune",
        "format": 1,
        "tool": "caa-bake 0.1.0",
        "base": {
            "model_id": "org/base",
            "revision": None,
            "path": "/models/base",
            "weights_fingerprint": fingerprint,
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
        },
        "behavior": behavior,
        "direction": direction,
        "target": "matching" if direction == "pos" else "not_matching",
        "data": {"split": "generate", "items": 10},
        "hyperparameters": hp,
        "distributed": {"world_size": 2, "device": "cpu", "backend": "gloo"},
        "training": {"steps": 5},
    }


def _checkpoint(root: Path, name: str, block: Any, **config: Any) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    content = {"model_type": "llama", **config}
    if block is not None:
        content["caa_bake"] = block
    (folder / "config.json").write_text(json.dumps(content), encoding="utf-8")
    return folder


def _ref(fingerprint: str) -> ModelRef:
    return ModelRef(Path("/models/base"), "org/base", None, "org--base", fingerprint)


def _entry(**hyperparameters: Any) -> FinetunedCheckpoint:
    block = _block(**hyperparameters)
    return FinetunedCheckpoint(
        path=Path("/x"),
        behavior="refusal",
        direction="pos",
        base_model_id="org/base",
        base_fingerprint=FP_A,
        lora=bool(block["hyperparameters"].get("lora")),
        block=block,
    )


# ---- read_finetune_block --------------------------------------------------------------


def test_read_returns_the_whole_finetune_block(tmp_path: Path) -> None:
    block = _block("sycophancy", "neg")
    folder = _checkpoint(tmp_path, "ft", block)
    assert read_finetune_block(folder) == block


@pytest.mark.parametrize(
    "block",
    [
        None,  # a plain model
        {"format": 1, "rule": "llama", "bakes": []},  # a caa-bake export
        {**_block(), "kind": "export"},
        "finetune",
        ["kind", "finetune"],
    ],
)
def test_read_ignores_other_configs(tmp_path: Path, block: Any) -> None:
    assert read_finetune_block(_checkpoint(tmp_path, "m", block)) is None


@pytest.mark.parametrize(
    "content", [b"{not json", b"\xff\xfe\x00 not utf-8", b'["a", "list"]', b"42", b""]
)
def test_read_ignores_unreadable_configs(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "config.json").write_bytes(content)
    assert read_finetune_block(tmp_path) is None


def test_read_of_a_folder_without_config(tmp_path: Path) -> None:
    assert read_finetune_block(tmp_path) is None
    assert read_finetune_block(tmp_path / "missing") is None


# ---- list_finetuned -------------------------------------------------------------------


def test_lists_only_finetuned_folders(tmp_path: Path) -> None:
    ft = _checkpoint(tmp_path, "base-ft-refusal-pos", _block())
    _checkpoint(tmp_path, "plain-model", None)
    _checkpoint(tmp_path, "base-refusal-L13-m1", {"format": 1, "rule": "llama", "bakes": []})
    _checkpoint(tmp_path, ".base-ft-refusal-pos.tmp-abc", _block())  # hidden temporary
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{")
    (tmp_path / "stray-file.json").write_text(json.dumps({"caa_bake": _block()}))

    found = list_finetuned(root=tmp_path)
    assert found == [
        FinetunedCheckpoint(
            path=ft,
            behavior="refusal",
            direction="pos",
            base_model_id="org/base",
            base_fingerprint=FP_A,
            lora=False,
            block=_block(),
        )
    ]


def test_sorted_by_behavior_direction_then_name(tmp_path: Path) -> None:
    _checkpoint(tmp_path, "a-syc-pos", _block("sycophancy", "pos"))
    _checkpoint(tmp_path, "b-ref-pos", _block("refusal", "pos"))
    _checkpoint(tmp_path, "c-ref-neg", _block("refusal", "neg"))
    _checkpoint(tmp_path, "a-ref-pos", _block("refusal", "pos"))
    names = [f.path.name for f in list_finetuned(root=tmp_path)]
    assert names == ["c-ref-neg", "a-ref-pos", "b-ref-pos", "a-syc-pos"]


def test_filters_by_base_fingerprint(tmp_path: Path) -> None:
    from_a = _checkpoint(tmp_path, "from-a", _block(fingerprint=FP_A))
    from_b = _checkpoint(tmp_path, "from-b", _block(fingerprint=FP_B))
    assert [f.path for f in list_finetuned(_ref(FP_A), root=tmp_path)] == [from_a]
    assert [f.path for f in list_finetuned(_ref(FP_B), root=tmp_path)] == [from_b]
    assert list_finetuned(_ref("c" * 64), root=tmp_path) == []
    assert len(list_finetuned(None, root=tmp_path)) == 2


def test_base_is_matched_by_fingerprint_not_model_id(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path, "ft", _block(fingerprint=FP_A))
    renamed = ModelRef(Path("/elsewhere"), "other/name", "rev", "other--name", FP_A)
    assert [f.path for f in list_finetuned(renamed, root=tmp_path)] == [folder]


def test_filters_by_behavior_and_direction(tmp_path: Path) -> None:
    ref_pos = _checkpoint(tmp_path, "ref-pos", _block("refusal", "pos"))
    ref_neg = _checkpoint(tmp_path, "ref-neg", _block("refusal", "neg"))
    syc_pos = _checkpoint(tmp_path, "syc-pos", _block("sycophancy", "pos"))
    corr = _checkpoint(tmp_path, "corr-neg", _block("corrigible-neutral-HHH", "neg"))

    def paths(**kwargs: Any) -> list[Path]:
        return [f.path for f in list_finetuned(root=tmp_path, **kwargs)]

    assert paths(behavior="refusal") == [ref_neg, ref_pos]
    assert paths(direction="pos") == [ref_pos, syc_pos]
    assert paths(behavior="refusal", direction="neg") == [ref_neg]
    assert paths(behavior="sycophancy", direction="neg") == []
    # behavior names are canonicalized (case-insensitive), directions normalized
    assert paths(behavior="corrigible-neutral-hhh") == [corr]
    assert paths(behavior="REFUSAL", direction=" POS ") == [ref_pos]
    assert [f.path for f in list_finetuned(_ref(FP_A), "refusal", "pos", root=tmp_path)] == [
        ref_pos
    ]


def test_bad_filters_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(CaaBakeError, match="unknown behavior 'nope'"):
        list_finetuned(behavior="nope", root=tmp_path)
    with pytest.raises(CaaBakeError, match="unknown direction 'sideways'"):
        list_finetuned(direction="sideways", root=tmp_path)


def test_explicit_root_must_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(CaaBakeError, match="is not a folder"):
        list_finetuned(root=tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CaaBakeError, match="is not a folder"):
        list_finetuned(root=tmp_path / "file")


def test_default_root_is_the_exports_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports = tmp_path / "exports"
    monkeypatch.setenv("CAA_BAKE_EXPORTS_DIR", str(exports))
    assert list_finetuned() == []  # a missing default folder is just empty
    folder = _checkpoint(exports, "ft", _block())
    assert [f.path for f in list_finetuned()] == [folder]

    monkeypatch.delenv("CAA_BAKE_EXPORTS_DIR")
    monkeypatch.setenv("CAA_BAKE_HOME", str(tmp_path / "ws"))
    in_home = _checkpoint(tmp_path / "ws" / "exported_models", "ft-home", _block())
    assert [f.path for f in list_finetuned()] == [in_home]


def test_lora_flag_comes_from_the_hyperparameters(tmp_path: Path) -> None:
    lora = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
    _checkpoint(tmp_path, "full", _block(lora=None))
    _checkpoint(tmp_path, "lora", _block(lora=lora))
    _checkpoint(tmp_path, "no-hp", {**_block(), "hyperparameters": None})
    flags = {f.path.name: (f.lora, f.label) for f in list_finetuned(root=tmp_path)}
    assert flags == {
        "full": (False, "ft-pos"),
        "lora": (True, "ft-pos-lora"),
        "no-hp": (False, "ft-pos"),
    }


# ---- FinetunedCheckpoint.label ---------------------------------------------------------


@pytest.mark.parametrize(
    ("hyperparameters", "label"),
    [
        ({}, "ft-pos"),  # the paper's: SGD, lr 1e-4, 1 epoch, full finetuning
        ({"lora": {"r": 16}}, "ft-pos-lora"),
        ({"optimizer": "adamw", "learning_rate": 1e-5}, "ft-pos-adamw-lr1e-05"),
        ({"optimizer": "adamw"}, "ft-pos-adamw-lr0.0001"),
        ({"learning_rate": 1e-3}, "ft-pos-sgd-lr0.001"),
        ({"epochs": 3}, "ft-pos-3ep"),
        ({"max_steps": 100}, "ft-pos-100steps"),
        ({"max_steps": 0}, "ft-pos"),
        (
            {
                "lora": {"r": 4},
                "optimizer": "adamw",
                "learning_rate": 2e-5,
                "epochs": 2,
                "max_steps": 50,
            },
            "ft-pos-lora-adamw-lr2e-05-2ep-50steps",
        ),
    ],
)
def test_label_names_what_differs_from_the_paper(
    hyperparameters: dict[str, Any], label: str
) -> None:
    assert _entry(**hyperparameters).label == label


def test_label_uses_the_direction_and_defaults_for_missing_hyperparameters(
    tmp_path: Path,
) -> None:
    block = {k: v for k, v in _block(direction="neg").items() if k != "hyperparameters"}
    _checkpoint(tmp_path, "old-style", block)
    (found,) = list_finetuned(root=tmp_path)
    assert found.direction == "neg"
    assert found.lora is False
    assert found.label == "ft-neg"
