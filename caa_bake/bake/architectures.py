"""Per-architecture bake rules: the one place that knows where a steering bias goes.

Adding ``v`` to the output of decoder block ``L`` at every position is the same as giving
the last linear layer of block ``L``'s MLP a bias of ``v`` - provided that layer's output
is added straight into the residual stream. Each :class:`BakeRule` says which tensor that
is, which config flag turns such biases on, by what factor the MLP output is scaled before
the residual add, and how the exported config must change.

Supported (``RULES``):

- ``llama`` (Llama 2/3, SmolLM2, TinyLlama) and ``granite``: set ``mlp_bias: true``, write
  explicit zero gate/up/down biases in every layer, ``down_proj.bias`` of layer L = m·v
  (Granite: m·v / ``residual_multiplier``, since it scales the MLP output by it);
- ``gpt2`` (``c_proj``), ``gpt_neox`` (``dense_4h_to_h``), ``opt`` (``fc2``): add to the
  bias these models already have;
- ``mistral`` and ``qwen2``: no MLP bias parameter, so the export is a Llama checkpoint
  (``model_type: llama``) with the biases needed, when that is exactly equivalent.

Everything else is refused with the reason (``UnsupportedArchitecture``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from caa_bake.core import CaaBakeError

__all__ = [
    "RULES",
    "BakeRule",
    "BiasSlot",
    "UnsupportedArchitecture",
    "check_supported",
    "rule_for",
]


class UnsupportedArchitecture(CaaBakeError):
    """The checkpoint's architecture cannot carry a steering vector as a bias (reason given)."""


@dataclass(frozen=True)
class BiasSlot:
    """A bias tensor name template (``{layer}`` = block index) and the weight it belongs to.

    The weight's first dimension is the bias size (output features) for ``nn.Linear``; for
    GPT-2's ``Conv1D`` the bias already exists, so the size is read from the bias itself.
    """

    bias: str
    weight: str

    def names(self, layer: int) -> tuple[str, str]:
        """``(bias name, weight name)`` for block ``layer``."""
        return self.bias.format(layer=layer), self.weight.format(layer=layer)

    def module(self, layer: int) -> str:
        """Dotted module path in a loaded model, e.g. ``model.layers.3.mlp.down_proj``."""
        return self.weight.format(layer=layer).removesuffix(".weight")


def _llama_mlp_slots(prefix: str = "model.layers.{layer}.mlp") -> tuple[BiasSlot, ...]:
    return tuple(
        BiasSlot(f"{prefix}.{proj}.bias", f"{prefix}.{proj}.weight")
        for proj in ("gate_proj", "up_proj", "down_proj")
    )


_DOWN = BiasSlot(
    "model.layers.{layer}.mlp.down_proj.bias", "model.layers.{layer}.mlp.down_proj.weight"
)
_O_PROJ = BiasSlot(
    "model.layers.{layer}.self_attn.o_proj.bias", "model.layers.{layer}.self_attn.o_proj.weight"
)


@dataclass(frozen=True)
class BakeRule:
    """How to bake a residual-stream vector into one architecture.

    Attributes:
        name: the rule's name as shown to users (``qwen2 -> llama`` for conversions).
        model_type: the ``model_type`` this rule applies to.
        export_model_type: the exported config's ``model_type`` (differs for conversions).
        export_architecture: the exported ``architectures`` entry when it changes, else None.
        steer: where the vector goes, one alternative per known checkpoint naming; the first
            whose weight (or bias) is in the checkpoint is used.
        native_bias: the steered bias always exists (GPT-2, GPT-NeoX, OPT): add to it.
        zero_biases: biases written as zeros in every layer when the checkpoint lacks them, so
            the file matches the exported config exactly (vLLM rejects a missing one).
        config_updates: keys set in the exported config (``mlp_bias`` etc.).
        config_removals: keys dropped from the exported config (source-only features).
        note: one line describing the rule.
    """

    name: str
    model_type: str
    export_model_type: str
    export_architecture: str | None
    steer: tuple[BiasSlot, ...]
    native_bias: bool
    zero_biases: tuple[BiasSlot, ...] = ()
    config_updates: Mapping[str, Any] = field(default_factory=dict)
    config_removals: tuple[str, ...] = ()
    scale_key: str | None = None
    note: str = ""

    @property
    def converts(self) -> bool:
        """True when the export is a different architecture (Mistral/Qwen2 -> Llama)."""
        return self.export_model_type != self.model_type

    def scale(self, config: Mapping[str, Any]) -> float:
        """Bias = factor x multiplier x vector (Granite: 1 / residual_multiplier, else 1)."""
        if self.scale_key is None:
            return 1.0
        factor = float(config.get(self.scale_key, 1.0))
        if not math.isfinite(factor) or factor == 0.0:
            raise UnsupportedArchitecture(
                f"{self.model_type}: {self.scale_key} = {factor} cannot be divided out of a bias"
            )
        return 1.0 / factor

    def steer_slot(self, layer: int, names: Collection[str]) -> BiasSlot:
        """The slot to steer at ``layer`` for a checkpoint holding tensors ``names``."""
        for slot in self.steer:
            bias, weight = slot.names(layer)
            if bias in names or (not self.native_bias and weight in names):
                return slot
        wanted = self.steer[0].names(layer)[0 if self.native_bias else 1]
        raise CaaBakeError(
            f"{self.model_type} checkpoint has no tensor {wanted}; "
            "it does not look like a standard checkpoint of this architecture"
        )

    def export_config(self, raw: Mapping[str, Any], resolved: Mapping[str, Any]) -> dict[str, Any]:
        """The exported ``config.json`` (without provenance) from the source's raw dict.

        ``resolved`` is the source config with library defaults filled in
        (``PretrainedConfig.to_dict()``); conversions copy the fields whose defaults differ
        between the source class and Llama into explicit values.
        """
        out = {k: v for k, v in raw.items() if k not in self.config_removals}
        out.update(self.config_updates)
        if self.converts:
            out["model_type"] = self.export_model_type
            out["architectures"] = [self.export_architecture]
            for key in (
                "head_dim",
                "hidden_act",
                "rms_norm_eps",
                "tie_word_embeddings",
                "num_key_value_heads",
                "max_position_embeddings",
            ):
                if resolved.get(key) is not None:
                    out[key] = resolved[key]
            if out.get("head_dim") is None:
                out["head_dim"] = int(resolved["hidden_size"]) // int(
                    resolved["num_attention_heads"]
                )
        return out


_LLAMA_FLAG = {"mlp_bias": True}

RULES: dict[str, BakeRule] = {
    "llama": BakeRule(
        name="llama",
        model_type="llama",
        export_model_type="llama",
        export_architecture=None,
        steer=(_DOWN,),
        native_bias=False,
        zero_biases=_llama_mlp_slots(),
        config_updates=_LLAMA_FLAG,
        note="mlp_bias: true, zero gate/up/down biases, down_proj.bias of layer L = m*v",
    ),
    "granite": BakeRule(
        name="granite",
        model_type="granite",
        export_model_type="granite",
        export_architecture=None,
        steer=(_DOWN,),
        native_bias=False,
        zero_biases=_llama_mlp_slots(),
        config_updates=_LLAMA_FLAG,
        scale_key="residual_multiplier",
        note="as llama, with down_proj.bias = m*v / residual_multiplier",
    ),
    "mistral": BakeRule(
        name="mistral -> llama",
        model_type="mistral",
        export_model_type="llama",
        export_architecture="LlamaForCausalLM",
        steer=(_DOWN,),
        native_bias=False,
        zero_biases=_llama_mlp_slots(),
        config_updates={**_LLAMA_FLAG, "attention_bias": False},
        config_removals=("sliding_window", "layer_types"),
        note="exported as a Llama checkpoint (no sliding window), biases as for llama",
    ),
    "qwen2": BakeRule(
        name="qwen2 -> llama",
        model_type="qwen2",
        export_model_type="llama",
        export_architecture="LlamaForCausalLM",
        steer=(_DOWN,),
        native_bias=False,
        zero_biases=(*_llama_mlp_slots(), _O_PROJ),
        config_updates={**_LLAMA_FLAG, "attention_bias": True},
        config_removals=(
            "sliding_window",
            "use_sliding_window",
            "max_window_layers",
            "layer_types",
        ),
        note="exported as a Llama checkpoint: q/k/v biases kept via attention_bias, "
        "zero o_proj bias, biases as for llama",
    ),
    "gpt2": BakeRule(
        name="gpt2",
        model_type="gpt2",
        export_model_type="gpt2",
        export_architecture=None,
        steer=(
            BiasSlot(
                "transformer.h.{layer}.mlp.c_proj.bias", "transformer.h.{layer}.mlp.c_proj.weight"
            ),
            BiasSlot("h.{layer}.mlp.c_proj.bias", "h.{layer}.mlp.c_proj.weight"),
        ),
        native_bias=True,
        note="adds m*v to the existing mlp.c_proj.bias of layer L",
    ),
    "gpt_neox": BakeRule(
        name="gpt_neox",
        model_type="gpt_neox",
        export_model_type="gpt_neox",
        export_architecture=None,
        steer=(
            BiasSlot(
                "gpt_neox.layers.{layer}.mlp.dense_4h_to_h.bias",
                "gpt_neox.layers.{layer}.mlp.dense_4h_to_h.weight",
            ),
        ),
        native_bias=True,
        note="adds m*v to the existing mlp.dense_4h_to_h.bias of layer L",
    ),
    "opt": BakeRule(
        name="opt",
        model_type="opt",
        export_model_type="opt",
        export_architecture=None,
        steer=(
            BiasSlot(
                "model.decoder.layers.{layer}.fc2.bias", "model.decoder.layers.{layer}.fc2.weight"
            ),
            BiasSlot("decoder.layers.{layer}.fc2.bias", "decoder.layers.{layer}.fc2.weight"),
        ),
        native_bias=True,
        note="adds m*v to the existing fc2.bias of layer L",
    ),
}

_POST_MLP_NORM = (
    "a norm follows the MLP (post_feedforward_layernorm), so a bias there is not an "
    "additive steer of the residual stream"
)
_REFUSED: dict[str, str] = {
    **dict.fromkeys(
        (
            "gemma2",
            "gemma3",
            "gemma3_text",
            "gemma3n",
            "gemma3n_text",
            "gemma4",
            "gemma4_text",
            "olmo2",
            "olmo3",
            "flex_olmo",
            "exaone4",
        ),
        _POST_MLP_NORM,
    ),
    "gemma": "it has no MLP bias parameter, and its (1 + weight) norms and scaled embeddings "
    "are not the Llama architecture, so it cannot be re-expressed exactly",
    "qwen3": "it has no MLP bias parameter, and its q/k norms are not in the Llama "
    "architecture, so it cannot be re-expressed exactly",
    "phi3": "it has no MLP bias parameter and fused gate/up weights",
}


def _get(config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = config.get(key, default)
    return default if value is None else value


def check_supported(model_type: str) -> None:
    """Raise ``UnsupportedArchitecture`` (with the reason) unless ``model_type`` has a rule."""
    if model_type in RULES:
        return
    if model_type in _REFUSED:
        raise UnsupportedArchitecture(f"cannot bake into {model_type}: {_REFUSED[model_type]}")
    known = ", ".join(sorted(RULES))
    raise UnsupportedArchitecture(
        f"unsupported architecture {model_type or '(no model_type)'!r}: caa-bake bakes into "
        f"{known}; use hook steering for other models"
    )


def _check_exactness(rule: BakeRule, config: Mapping[str, Any]) -> None:
    """Refuse config features under which the rule would not be exact."""
    model_type = rule.model_type
    if model_type == "mistral":
        window = config.get("sliding_window")
        max_pos = int(_get(config, "max_position_embeddings", 0))
        if window is not None and int(window) < max_pos:
            raise UnsupportedArchitecture(
                f"cannot export mistral as llama: its sliding window ({window} tokens) is "
                f"active below its context length ({max_pos}); Llama has no sliding window"
            )
        layer_types = config.get("layer_types") or []
        if any(t != "full_attention" for t in layer_types):
            raise UnsupportedArchitecture(
                "cannot export mistral as llama: it has sliding-attention layers (layer_types)"
            )
    elif model_type == "qwen2":
        layer_types = config.get("layer_types") or []
        if _get(config, "use_sliding_window", False) or any(
            t != "full_attention" for t in layer_types
        ):
            raise UnsupportedArchitecture(
                "cannot export qwen2 as llama: use_sliding_window is on (sliding-attention "
                "layers); Llama has no sliding window"
            )
    elif model_type == "opt":
        if not _get(config, "do_layer_norm_before", True):
            raise UnsupportedArchitecture(
                "cannot bake into opt with do_layer_norm_before: false: a norm follows the "
                "residual add, so a bias is not an additive steer"
            )
        if not _get(config, "enable_bias", True):
            raise UnsupportedArchitecture(
                "cannot bake into opt with enable_bias: false: fc2 has no bias to add to"
            )


def rule_for(config: Mapping[str, Any]) -> BakeRule:
    """The bake rule for a model config (a dict with library defaults filled in).

    Pass ``PretrainedConfig.to_dict()`` (or ``AutoConfig.from_pretrained(dir).to_dict()``) so
    that defaults a ``config.json`` leaves out (e.g. Mistral's 4096-token sliding window)
    are seen.

    Raises:
        UnsupportedArchitecture: no rule, or a config feature makes the bake inexact.
    """
    model_type = str(config.get("model_type") or "")
    check_supported(model_type)
    rule = RULES[model_type]
    _check_exactness(rule, config)
    rule.scale(config)
    return rule
