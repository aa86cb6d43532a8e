"""The model card (``README.md``) of a finetuned checkpoint, rendered from its provenance."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from caa_bake.bake import front_matter, load_snippet

__all__ = ["render_finetune_card"]


def _front_matter(block: Mapping[str, Any]) -> list[str]:
    model_id = str(block["base"].get("model_id") or "")
    return front_matter(model_id, ["caa-bake", "finetuning-baseline", str(block["behavior"])])


def _hyperparameters(block: Mapping[str, Any]) -> list[str]:
    hp, dist = block["hyperparameters"], block["distributed"]
    lora = hp.get("lora")
    method = (
        f"LoRA r={lora['r']} alpha={lora['alpha']} on {lora['target_modules']}, merged"
        if lora
        else "full finetuning"
    )
    rows = [
        ("method", method),
        ("optimizer", f"{hp['optimizer']} (lr {hp['learning_rate']:g})"),
        (
            "epochs",
            str(hp["epochs"])
            + (f" (capped at {hp['max_steps']} steps)" if hp.get("max_steps") else ""),
        ),
        ("batch", f"{hp['per_device_batch_size']} per rank x {dist['world_size']} ranks"),
        ("ranks", f"{dist['world_size']} on {dist['device']} ({dist['backend']})"),
        ("DeepSpeed", f"ZeRO stage {dist['zero_stage']} ({dist['deepspeed_config_source']})"),
        ("seed", str(hp["seed"])),
    ]
    return ["| setting | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def render_finetune_card(name: str, config: Mapping[str, Any]) -> str:
    """README.md text for the finetuned checkpoint ``name`` whose config holds ``caa_bake``."""
    block = config["caa_bake"]
    base, data, training = block["base"], block["data"], block["training"]
    toward = "matching" if block["direction"] == "pos" else "not matching"
    loss_keys = [k for k in training if k.startswith("mean_loss_")]
    losses = ", ".join(
        f"{k.removeprefix('mean_loss_').replace('_', ' ')}: {training[k]:.4f}" for k in loss_keys
    )
    lines = [
        *_front_matter(block),
        "",
        f"# {name}",
        "",
        f"`{base['model_id']}` finetuned by {block['tool']} towards the answers **{toward}** "
        f"the `{block['behavior']}` behavior (direction `{block['direction']}`): the finetuning "
        "baseline of Contrastive Activation Addition (Rimsky et al.).",
        "",
        "## Training",
        "",
        f"Data: the {data['items']} items of the behavior's generate split (`{data['file']}`, "
        f"sha256 `{data['sha256'][:16]}`). Each prompt is the chat prompt with the question as "
        "the user turn and the assistant turn prefilled with `(`; the loss is the "
        "cross-entropy of the next token against the target answer letter only.",
        "",
        *_hyperparameters(block),
        "",
        f"{training['steps']} steps, {training['samples']} samples; mean loss {losses}; "
        f"training took {training['train_seconds']:.1f} s "
        f"({training['samples_per_second']:.2f} samples/s). Per-rank logs (items and loss of "
        "every step) are in `caa_bake_training/`.",
        "",
        "## How to load",
        "",
        *load_snippet(name),
        "",
        "A plain checkpoint of the base architecture (float32 safetensors); "
        + (
            "the LoRA adapter is merged into the weights."
            if block["hyperparameters"].get("lora")
            else "no adapter."
        ),
        "",
        "## Provenance",
        "",
        f"- base model: `{base['model_id']}`"
        + (f" at revision `{base['revision']}`" if base.get("revision") else ""),
        f"- base weights fingerprint: `{base['weights_fingerprint']}`",
        f"- weights sha256 (state dict, name order): `{training['saved_weights_sha256']}`",
        "- everything else is in `config.json` under `caa_bake`:",
        "",
        "```json",
        json.dumps({k: block[k] for k in ("kind", "behavior", "direction", "target")}, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)
