"""``caa_bake.finetune.card``: the README of a finetuned checkpoint, from its real provenance."""

from __future__ import annotations

import json
from typing import Any

from caa_bake.finetune.card import render_finetune_card
from caa_bake.finetune.log import RankLog, StepRecord, summarize
from caa_bake.finetune.run import provenance
from caa_bake.finetune.spec import FinetuneSpec, LoraSettings

DATA_SHA = "0123456789abcdef" * 4


def _config(*, model_id: str = "owner/tiny-chat", **changes: Any) -> dict[str, Any]:
    """A checkpoint config whose ``caa_bake`` block is built as a real run builds it."""
    fields: dict[str, Any] = {
        "behavior": "sycophancy",
        "direction": "pos",
        "base": {
            "path": "/models/tiny",
            "model_id": model_id,
            "revision": None,
            "weights_fingerprint": "fp-1234",
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
        },
        "data": {"file": "generate_dataset.json", "sha256": DATA_SHA, "items": 12},
        "prompt_style": "chat-template",
        "letters": {"A": 7, "B": 8},
        "epochs": 1,
        "learning_rate": 1e-4,
        "optimizer": "sgd",
        "batch_size": 2,
        "world_size": 2,
        "device": "cpu",
        "zero_stage": 2,
        "ds_config": {"zero_optimization": {"stage": 2}},
        "ds_config_source": "caa_bake/finetune/configs/zero2.json",
        "out": "/exports/x",
        "seed": 3,
    }
    spec = FinetuneSpec(**{**fields, **changes})
    logs = []
    for rank in range(2):
        steps = [StepRecord(s, [2 * s + rank], 1.0 - 0.1 * s) for s in range(8)]
        logs.append(RankLog(rank, 2, "cpu", 1, steps, train_seconds=4.0, weights_sha256="w"))
    logs[0].saved_sha256 = "saved-sha"
    return {"model_type": "llama", "caa_bake": provenance(spec, summarize(logs), 9.5)}


def test_full_finetune_card() -> None:
    card = render_finetune_card("tiny-ft-sycophancy-pos", _config())
    lines = card.splitlines()
    assert lines[:8] == [
        "---",
        "base_model: owner/tiny-chat",
        "library_name: transformers",
        "tags:",
        "- caa-bake",
        "- finetuning-baseline",
        "- sycophancy",
        "---",
    ]
    assert "# tiny-ft-sycophancy-pos" in lines
    assert "towards the answers **matching** the `sycophancy` behavior (direction `pos`)" in card
    data = "the 12 items of the behavior's generate split (`generate_dataset.json`, sha256 `"
    assert f"{data}{DATA_SHA[:16]}`)" in card
    assert "| method | full finetuning |" in lines
    assert "| optimizer | sgd (lr 0.0001) |" in lines
    assert "| epochs | 1 |" in lines
    assert "| batch | 2 per rank x 2 ranks |" in lines
    assert "| ranks | 2 on cpu (gloo) |" in lines
    assert "| DeepSpeed | ZeRO stage 2 (caa_bake/finetune/configs/zero2.json) |" in lines
    assert "| seed | 3 |" in lines
    # 8 steps -> the first and last 2 steps' mean losses (mean over both ranks)
    assert "8 steps, 16 samples; mean loss first 2 steps: 0.9500, last 2 steps: 0.3500;" in card
    assert "training took 4.0 s (4.00 samples/s)" in card
    assert 'model = AutoModelForCausalLM.from_pretrained("tiny-ft-sycophancy-pos")' in card
    assert "no adapter." in card
    assert "- base model: `owner/tiny-chat`" in lines  # no revision given
    assert "- base weights fingerprint: `fp-1234`" in lines
    assert "- weights sha256 (state dict, name order): `saved-sha`" in lines
    json_start = lines.index("```json") + 1
    json_end = lines.index("```", json_start)
    assert json.loads("\n".join(lines[json_start:json_end])) == {
        "kind": "finetune",
        "behavior": "sycophancy",
        "direction": "pos",
        "target": "matching",
    }
    assert card.endswith("```\n")


def test_lora_neg_capped_card_with_revision() -> None:
    config = _config(
        direction="neg",
        lora=LoraSettings(r=4, alpha=8),
        optimizer="adamw",
        learning_rate=3e-5,
        max_steps=8,
        epochs=2,
        base={
            "path": "/m",
            "model_id": "owner/tiny-chat",
            "revision": "abc123",
            "weights_fingerprint": "fp",
        },
    )
    card = render_finetune_card("n", config)
    assert "towards the answers **not matching** the `sycophancy` behavior" in card
    assert "| method | LoRA r=4 alpha=8 on all-linear, merged |" in card
    assert "| optimizer | adamw (lr 3e-05) |" in card
    assert "| epochs | 2 (capped at 8 steps) |" in card
    assert "the LoRA adapter is merged into the weights." in card
    assert "- base model: `owner/tiny-chat` at revision `abc123`" in card
    assert '"target": "not_matching"' in card


def test_a_local_base_model_has_no_base_model_front_matter() -> None:
    card = render_finetune_card("x", _config(model_id="tiny-local"))
    front = card.split("---")[1]
    assert "base_model" not in front
    assert "- finetuning-baseline" in front
