"""The model card (``README.md``) of an export: front matter, what was baked, caveats, usage.

The card is rendered from the ``caa_bake`` block of the export's ``config.json`` only, so it
is deterministic and can be re-rendered later, e.g. with an evaluation table
(:func:`update_model_card`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from caa_bake.bake.architectures import RULES
from caa_bake.core import CaaBakeError, atomic_file
from caa_bake.models import looks_like_hub_id

__all__ = [
    "POSITION_CAVEAT",
    "front_matter",
    "load_snippet",
    "render_model_card",
    "update_model_card",
]

POSITION_CAVEAT = (
    "A bias steers **every token, prompt included**. The CAA paper's reference code adds "
    "the vector only from the end of the instruction onward (and to every generated token), "
    "so this checkpoint is close to, but not the same as, reference CAA steering: the prompt "
    "tokens are steered too. `caa-bake verify` prints how far the two are apart on probe "
    "prompts (the baked model matches hook steering at *all* positions to float precision)."
)

_NO_EVAL = (
    "No evaluation has been recorded for this export yet. Run the behavior, MMLU and "
    "TruthfulQA evaluations on it and they will be listed here."
)


def front_matter(model_id: str, tags: Iterable[str]) -> list[str]:
    """Hugging Face card front matter: ``base_model`` when ``model_id`` is a hub id
    (``owner/name``), the transformers library, and ``tags`` without repeats."""
    lines = ["---"]
    if looks_like_hub_id(model_id) and "/" in model_id:
        lines.append(f"base_model: {model_id}")
    lines += ["library_name: transformers", "tags:"]
    lines += [f"- {tag}" for tag in dict.fromkeys(tags)]
    lines.append("---")
    return lines


def _front_matter(block: Mapping[str, Any]) -> list[str]:
    source = block.get("source", {})
    tags = ["caa-bake", "steering-vector", "contrastive-activation-addition"]
    tags += sorted({str(b["behavior"]) for b in block.get("bakes", [])})
    return front_matter(str(source.get("model_id") or ""), tags)


def _bakes_table(block: Mapping[str, Any]) -> list[str]:
    lines = [
        "| behavior | layer | multiplier | vector norm | normalized with | vector sha256 |",
        "|---|---|---|---|---|---|",
    ]
    for bake in block.get("bakes", []):
        norm_set = bake.get("normalization_set") or []
        normalized = f"{len(norm_set)} behaviors" if norm_set else "not normalized"
        lines.append(
            f"| {bake['behavior']} | {bake['layer']} | {bake['multiplier']:g} | "
            f"{bake['vector_norm']:.4g} | {normalized} | `{bake['vector_sha256'][:16]}` |"
        )
    return lines


def load_snippet(name: str) -> list[str]:
    """Markdown lines: loading the checkpoint folder ``name`` with stock transformers."""
    return [
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{name}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        "```",
    ]


def _usage(name: str, block: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    model_type = config.get("model_type")
    lines = [
        *load_snippet(name),
        "",
        "No custom code and no hooks: the steering lives in ordinary bias tensors, so any "
        "sampler or server works.",
    ]
    if config.get("mlp_bias"):
        lines += [
            f"The config sets `mlp_bias: true` on the `{model_type}` architecture; runtimes that "
            "honour it include transformers, vLLM, TGI and llama.cpp (`convert_hf_to_gguf.py` "
            "maps `down_proj.bias` to `ffn_down.bias`, which quantization keeps in F32).",
        ]
    source_type = block.get("source", {}).get("model_type")
    if source_type and source_type != model_type:
        lines += [
            "",
            f"The source was a `{source_type}` model; it is exported as `{model_type}`, which "
            "computes exactly the same function for it (checked by `caa-bake verify`).",
        ]
    lines += [
        "",
        f"Inspect what is baked with `caa-bake inspect {name}`; get the original weights back "
        f"with `caa-bake unbake {name} --out <folder>`.",
    ]
    return lines


def _combined_note(source: Mapping[str, Any]) -> list[str]:
    """For a combined model (a finetuned checkpoint with a vector baked in): what it is."""
    finetune = source.get("finetune")
    if not isinstance(finetune, Mapping):
        return []
    base = finetune.get("base", {})
    return [
        f"The source is a `caa-bake finetune` checkpoint ({finetune.get('behavior')}, "
        f"direction `{finetune.get('direction')}`) of `{base.get('model_id', '?')}`; "
        "together with the vector below this is a *combined* (finetuned + steered) model. "
        "Its finetuning record is kept in `config.json` under `caa_bake.source.finetune`.",
        "",
    ]


def render_model_card(name: str, config: Mapping[str, Any], evaluation: str | None = None) -> str:
    """The README.md text for an export named ``name`` with ``config`` (holding ``caa_bake``).

    Args:
        name: the export folder's name (used in the loading snippet).
        config: the export's config.json content.
        evaluation: a markdown table of evaluation results, if any.
    """
    block = config.get("caa_bake")
    if not isinstance(block, Mapping):
        raise CaaBakeError("config has no caa_bake block: not a caa-bake export")
    source = block.get("source", {})
    model_id = source.get("model_id", "?")
    revision = source.get("revision")
    biases = block.get("biases", {})
    rule = RULES.get(str(source.get("model_type")))
    steered = ", ".join(f"`{n}`" for n in biases.get("steered", {}).values())
    lines = [
        *_front_matter(block),
        "",
        f"# {name}",
        "",
        f"`{model_id}` with a Contrastive Activation Addition (CAA) steering vector baked into "
        f"its weights by {block.get('tool', 'caa-bake')}. Adding `multiplier x vector` to the "
        "output of decoder block L is done by a bias on the last linear layer of block L's "
        "MLP, whose output goes straight into the residual stream.",
        "",
        "## What was baked",
        "",
        *_combined_note(source),
        *_bakes_table(block),
        "",
        f"Rule `{block.get('rule')}`: {rule.note if rule else ''}. "
        f"Steering bias(es): {steered}, stored as {biases.get('dtype')} "
        f"(computed in float32, scale {biases.get('scale', 1.0):g}). "
        "Bakes at the same layer add up.",
        "",
        "## Position caveat",
        "",
        POSITION_CAVEAT,
        "",
        "## How to load",
        "",
        *_usage(name, block, config),
        "",
        "## Evaluation",
        "",
        evaluation.strip() if evaluation else _NO_EVAL,
        "",
        "## Provenance",
        "",
        f"- source model: `{model_id}`" + (f" at revision `{revision}`" if revision else ""),
        f"- source weights fingerprint: `{source.get('weights_fingerprint')}`",
        "- every bake's behavior, layer, multiplier, vector sha256 and norm, and the "
        "normalization set are recorded in `config.json` under `caa_bake`.",
        "",
    ]
    return "\n".join(lines)


def update_model_card(export_dir: Path, evaluation: str | None) -> Path:
    """Re-render ``export_dir/README.md`` with an evaluation table (markdown); returns its path."""
    export_dir = Path(export_dir)
    try:
        config = json.loads((export_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CaaBakeError(f"cannot read {export_dir / 'config.json'}: {exc}") from None
    target = export_dir / "README.md"
    with atomic_file(target) as tmp:
        tmp.write_text(render_model_card(export_dir.name, config, evaluation), encoding="utf-8")
    return target
