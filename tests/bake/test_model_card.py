"""``render_model_card`` / ``update_model_card``: the README.md of an export."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from caa_bake.bake.model_card import POSITION_CAVEAT, render_model_card, update_model_card
from caa_bake.core.errors import CaaBakeError

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SHA_A = "5d4fcceb6fbbc13d1569d49f18dddeda7cb7471cc0bdcb9bf34670ae0e2cb8d0"
SHA_B = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
EVAL_TABLE = "| eval | score |\n|---|---|\n| refusal | 0.42 |"


def _bake(behavior: str, layer: int, multiplier: float, sha: str, **extra: Any) -> dict[str, Any]:
    return {
        "behavior": behavior,
        "layer": layer,
        "multiplier": multiplier,
        "vector_sha256": sha,
        "vector_norm": 6.420835018157959,
        "normalized": False,
        "normalization_set": [],
        "vector_source": "cache",
        "vector_model_id": "",
        **extra,
    }


def _config(model_id: str = HUB_ID, **block_overrides: Any) -> dict[str, Any]:
    """A config.json as ``export_checkpoint`` writes it (llama rule, two bakes)."""
    block: dict[str, Any] = {
        "format": 1,
        "tool": "caa-bake 0.1.0",
        "rule": "llama",
        "source": {
            "model_id": model_id,
            "revision": None,
            "path": "/models/src",
            "weights_fingerprint": "a118c56e8d5d6a25",
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
        },
        "bakes": [
            _bake("sycophancy", 13, -1.5, SHA_B),
            _bake(
                "refusal",
                13,
                2.0,
                SHA_A,
                normalized=True,
                normalization_set=["refusal", "sycophancy", "myopic-reward"],
            ),
        ],
        "biases": {
            "dtype": "bfloat16",
            "scale": 1.0,
            "steered": {"13": "model.layers.13.mlp.down_proj.bias"},
            "delta_norm": {"13": 12.8},
            "added": 30,
            "patched": [],
        },
        "files": {"bias_shard": "model-caa-bake.safetensors"},
    }
    block.update(block_overrides)
    return {"model_type": "llama", "mlp_bias": True, "caa_bake": block}


def _front_matter(card: str) -> str:
    assert card.startswith("---\n")
    return card.split("---\n")[1]


def _section(card: str, heading: str) -> str:
    after = card.split(f"## {heading}\n", 1)[1]
    return after.split("\n## ", 1)[0]


def _finetune_block() -> dict[str, Any]:
    return {
        "kind": "finetune",
        "format": 1,
        "base": {"model_id": "org/base-model", "weights_fingerprint": "f00d"},
        "behavior": "refusal",
        "direction": "neg",
        "target": "not_matching",
        "hyperparameters": {"optimizer": "sgd", "learning_rate": 1e-4, "epochs": 1},
    }


# ---- render_model_card ----------------------------------------------------------------


def test_front_matter_has_base_model_and_tags() -> None:
    card = render_model_card("smol-refusal", _config())
    front = _front_matter(card)
    assert front.splitlines() == [
        f"base_model: {HUB_ID}",
        "library_name: transformers",
        "tags:",
        "- caa-bake",
        "- steering-vector",
        "- contrastive-activation-addition",
        "- refusal",  # behaviors sorted, after the fixed tags
        "- sycophancy",
    ]


def test_front_matter_tags_are_unique() -> None:
    bakes = [_bake("refusal", 3, 1.0, SHA_A), _bake("refusal", 5, 2.0, SHA_B)]
    front = _front_matter(render_model_card("x", _config(bakes=bakes)))
    assert front.count("- refusal\n") == 1


@pytest.mark.parametrize("model_id", ["/models/src", "gpt2", "./relative/folder", "?"])
def test_no_base_model_for_non_hub_sources(model_id: str) -> None:
    front = _front_matter(render_model_card("x", _config(model_id=model_id)))
    assert "base_model" not in front
    assert "library_name: transformers" in front


def test_title_and_intro_name_the_export_and_source() -> None:
    card = render_model_card("smol-refusal", _config())
    assert "\n# smol-refusal\n" in card
    assert f"`{HUB_ID}` with a Contrastive Activation Addition (CAA) steering vector" in card
    assert "by caa-bake 0.1.0." in card


def test_bakes_table() -> None:
    baked = _section(render_model_card("x", _config()), "What was baked")
    rows = [line for line in baked.splitlines() if line.startswith("|")]
    assert rows == [
        "| behavior | layer | multiplier | vector norm | normalized with | vector sha256 |",
        "|---|---|---|---|---|---|",
        f"| sycophancy | 13 | -1.5 | 6.421 | not normalized | `{SHA_B[:16]}` |",
        f"| refusal | 13 | 2 | 6.421 | 3 behaviors | `{SHA_A[:16]}` |",
    ]
    assert "Rule `llama`: mlp_bias: true" in baked
    assert "`model.layers.13.mlp.down_proj.bias`, stored as bfloat16" in baked
    assert "scale 1)" in baked
    assert "combined" not in baked


def test_position_caveat() -> None:
    card = render_model_card("x", _config())
    assert _section(card, "Position caveat").strip() == POSITION_CAVEAT
    assert "every token, prompt included" in POSITION_CAVEAT


def test_loading_instructions() -> None:
    load = _section(render_model_card("smol-refusal", _config()), "How to load")
    assert "from transformers import AutoModelForCausalLM, AutoTokenizer" in load
    assert 'model = AutoModelForCausalLM.from_pretrained("smol-refusal")' in load
    assert 'tokenizer = AutoTokenizer.from_pretrained("smol-refusal")' in load
    assert "`mlp_bias: true` on the `llama` architecture" in load
    assert "caa-bake inspect smol-refusal" in load
    assert "caa-bake unbake smol-refusal --out <folder>" in load
    assert "exported as" not in load  # same model type as the source


def test_loading_notes_follow_the_config() -> None:
    config = _config()
    config["mlp_bias"] = False
    config["caa_bake"]["source"]["model_type"] = "mistral"
    load = _section(render_model_card("x", config), "How to load")
    assert "mlp_bias" not in load
    assert "The source was a `mistral` model; it is exported as `llama`" in load


def test_combined_model_note_only_for_finetuned_sources() -> None:
    plain = render_model_card("x", _config())
    assert "combined" not in plain
    assert "caa-bake finetune" not in plain

    config = _config()
    config["caa_bake"]["source"]["finetune"] = _finetune_block()
    combined = render_model_card("x", config)
    baked = _section(combined, "What was baked")
    assert "The source is a `caa-bake finetune` checkpoint (refusal, direction `neg`)" in baked
    assert "of `org/base-model`" in baked
    assert "*combined* (finetuned + steered) model" in baked
    assert "caa_bake.source.finetune" in baked
    # the note comes before the bakes table
    assert baked.index("*combined*") < baked.index("| behavior |")


def test_combined_note_ignores_a_non_mapping_finetune_entry() -> None:
    config = _config()
    config["caa_bake"]["source"]["finetune"] = None
    assert "combined" not in render_model_card("x", config)


def test_evaluation_section() -> None:
    without = _section(render_model_card("x", _config()), "Evaluation")
    assert "No evaluation has been recorded for this export yet." in without
    with_eval = _section(
        render_model_card("x", _config(), evaluation="\n\n" + EVAL_TABLE + "\n\n"), "Evaluation"
    )
    assert with_eval.strip() == EVAL_TABLE
    assert "No evaluation" not in with_eval


def test_provenance_section() -> None:
    config = _config()
    prov = _section(render_model_card("x", config), "Provenance")
    assert f"- source model: `{HUB_ID}`\n" in prov
    assert "revision" not in prov.splitlines()[1]
    assert "- source weights fingerprint: `a118c56e8d5d6a25`" in prov
    config["caa_bake"]["source"]["revision"] = "abc123"
    prov = _section(render_model_card("x", config), "Provenance")
    assert f"- source model: `{HUB_ID}` at revision `abc123`" in prov


def test_render_is_deterministic_and_does_not_modify_the_config() -> None:
    config = _config()
    config["caa_bake"]["source"]["finetune"] = _finetune_block()
    before = copy.deepcopy(config)
    first = render_model_card("x", config, EVAL_TABLE)
    assert render_model_card("x", config, EVAL_TABLE) == first
    assert config == before
    assert first.endswith("\n")


@pytest.mark.parametrize(
    "config",
    [{}, {"model_type": "llama"}, {"caa_bake": None}, {"caa_bake": ["not", "a", "mapping"]}],
)
def test_config_without_a_caa_bake_block_is_rejected(config: dict[str, Any]) -> None:
    with pytest.raises(CaaBakeError, match="no caa_bake block"):
        render_model_card("x", config)


# ---- update_model_card ----------------------------------------------------------------


def _export_folder(root: Path, name: str, config: dict[str, Any]) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "README.md").write_text("# stale card\n", encoding="utf-8")
    return folder


def test_update_writes_the_evaluation_table(tmp_path: Path) -> None:
    config = _config()
    folder = _export_folder(tmp_path, "smol-refusal", config)
    path = update_model_card(folder, EVAL_TABLE)
    assert path == folder / "README.md"
    card = path.read_text(encoding="utf-8")
    assert card == render_model_card("smol-refusal", config, EVAL_TABLE)
    assert "| refusal | 0.42 |" in _section(card, "Evaluation")
    assert "stale card" not in card
    assert 'from_pretrained("smol-refusal")' in card  # named after the folder
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json"]


def test_update_without_evaluation_renders_the_placeholder(tmp_path: Path) -> None:
    folder = _export_folder(tmp_path, "e", _config())
    update_model_card(folder, EVAL_TABLE)
    card = update_model_card(folder, None).read_text(encoding="utf-8")
    assert "| refusal | 0.42 |" not in card
    assert "No evaluation has been recorded for this export yet." in card


def test_update_rejects_a_non_export_and_keeps_its_readme(tmp_path: Path) -> None:
    folder = _export_folder(tmp_path, "plain", {"model_type": "llama"})
    with pytest.raises(CaaBakeError, match="no caa_bake block"):
        update_model_card(folder, EVAL_TABLE)
    assert (folder / "README.md").read_text() == "# stale card\n"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json"]


def test_update_reports_unreadable_configs(tmp_path: Path) -> None:
    with pytest.raises(CaaBakeError, match="cannot read"):
        update_model_card(tmp_path / "missing", EVAL_TABLE)
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CaaBakeError, match="cannot read"):
        update_model_card(folder, EVAL_TABLE)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]


# ---- a real export --------------------------------------------------------------------


def _tiny_llama(folder: Path, *, hidden: int = 8, inter: int = 16, layers: int = 2) -> Path:
    """A minimal llama checkpoint written by hand (config.json + zero weights): the export
    only reads the config and tensor headers, and this avoids building a real model."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    folder.mkdir()
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=inter,
        vocab_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
    ).to_dict()
    config["architectures"] = ["LlamaForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    tensors = {
        "model.embed_tokens.weight": torch.zeros(16, hidden),
        "model.norm.weight": torch.ones(hidden),
        "lm_head.weight": torch.zeros(16, hidden),
    }
    for i in range(layers):
        pre = f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[f"{pre}self_attn.{proj}.weight"] = torch.zeros(hidden, hidden)
        tensors[f"{pre}mlp.gate_proj.weight"] = torch.zeros(inter, hidden)
        tensors[f"{pre}mlp.up_proj.weight"] = torch.zeros(inter, hidden)
        tensors[f"{pre}mlp.down_proj.weight"] = torch.zeros(hidden, inter)
        tensors[f"{pre}input_layernorm.weight"] = torch.ones(hidden)
        tensors[f"{pre}post_attention_layernorm.weight"] = torch.ones(hidden)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_card_of_a_real_combined_export(tmp_path: Path) -> None:
    """Export a tiny llama whose config carries a finetune block: the card says *combined*."""
    import torch

    from caa_bake.bake.bakes import Bake
    from caa_bake.bake.export import export_checkpoint
    from caa_bake.models.loading import resolve_model
    from caa_bake.steering.vector import SteeringVector

    src = _tiny_llama(tmp_path / "src")
    raw = json.loads((src / "config.json").read_text())
    raw["caa_bake"] = _finetune_block()
    (src / "config.json").write_text(json.dumps(raw))
    vector = SteeringVector({1: torch.ones(raw["hidden_size"])})
    out = export_checkpoint(
        resolve_model(str(src)), [Bake("refusal", 1, 2.0, vector)], tmp_path / "combined"
    ).path

    config = json.loads((out / "config.json").read_text())
    assert config["caa_bake"]["source"]["finetune"]["direction"] == "neg"
    card = (out / "README.md").read_text()
    assert card == render_model_card("combined", config)
    assert "*combined* (finetuned + steered) model" in card
    assert "| refusal | 1 | 2 |" in card
    assert "`model.layers.1.mlp.down_proj.bias`" in card
    update_model_card(out, EVAL_TABLE)
    assert (out / "README.md").read_text() == render_model_card("combined", config, EVAL_TABLE)


def test_card_of_a_real_plain_export_has_no_combined_note(tmp_path: Path) -> None:
    import torch

    from caa_bake.bake.bakes import Bake
    from caa_bake.bake.export import export_checkpoint
    from caa_bake.models.loading import resolve_model
    from caa_bake.steering.vector import SteeringVector

    src = _tiny_llama(tmp_path / "src")
    vector = SteeringVector({0: torch.ones(8)})
    out = export_checkpoint(
        resolve_model(str(src)), [Bake("sycophancy", 0, -1.0, vector)], tmp_path / "plain"
    ).path
    card = (out / "README.md").read_text()
    assert "combined" not in card
    assert "| sycophancy | 0 | -1 |" in card
    assert "base_model" not in _front_matter(card)  # a local folder is not a Hub id
