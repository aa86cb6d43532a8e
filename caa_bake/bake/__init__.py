"""Vectors into weights: per-architecture rules, the streaming export, verify, inspect, unbake.

The public face of ``caa_bake.bake``: other subpackages and the CLI import these names
from ``caa_bake.bake``; its modules are internal to it. Names load on first use
(PEP 562), so importing the face costs no more than importing what is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caa_bake.bake.architectures import (
        RULES,
        BakeRule,
        BiasSlot,
        UnsupportedArchitecture,
        check_supported,
        rule_for,
    )
    from caa_bake.bake.bakes import (
        Bake,
        BakeSpec,
        export_name,
        parse_bake_spec,
        resolve_bakes,
    )
    from caa_bake.bake.export import (
        BIAS_SHARD,
        CONFIG_KEY,
        EXPORT_FORMAT,
        META_DIR,
        ORIGINAL_BIASES,
        RENAMED_SINGLE,
        REPLACED_FILES,
        SOURCE_COPIES,
        VECTORS_FILE,
        ExportResult,
        export_checkpoint,
        prepare_target,
        read_export_block,
    )
    from caa_bake.bake.inspection import (
        baked_deltas,
        inspect_export,
        stored_deltas,
    )
    from caa_bake.bake.lm_eval_parity import (
        LmEvalCheck,
        hand_loglikelihood,
        lm_eval_check,
        lm_eval_request,
        logits_of,
        quiet_loading,
    )
    from caa_bake.bake.memory import bake_in_memory
    from caa_bake.bake.model_card import (
        POSITION_CAVEAT,
        front_matter,
        load_snippet,
        render_model_card,
        update_model_card,
    )
    from caa_bake.bake.plan import (
        BiasPlan,
        plan_biases,
        sum_deltas,
    )
    from caa_bake.bake.safetensors_io import (
        DTYPES,
        INDEX_FILE,
        SINGLE_FILE,
        Checkpoint,
        SafetensorsHeader,
        TensorInfo,
        copy_file,
        dtype_name,
        link_file,
        open_checkpoint,
        patch_tensor,
        read_header,
        read_tensor,
        tensor_bytes,
        write_shard,
    )
    from caa_bake.bake.source import (
        SourceModel,
        load_source_config,
        model_dims,
    )
    from caa_bake.bake.unbake import unbake_checkpoint
    from caa_bake.bake.verify import (
        PROBES,
        TOLERANCE_FP32,
        TOLERANCES,
        LoadCheck,
        ProbeResult,
        VerifyReport,
        verify_export,
    )

__all__ = [
    "BIAS_SHARD",
    "CONFIG_KEY",
    "DTYPES",
    "EXPORT_FORMAT",
    "INDEX_FILE",
    "META_DIR",
    "ORIGINAL_BIASES",
    "POSITION_CAVEAT",
    "PROBES",
    "RENAMED_SINGLE",
    "REPLACED_FILES",
    "RULES",
    "SINGLE_FILE",
    "SOURCE_COPIES",
    "TOLERANCES",
    "TOLERANCE_FP32",
    "VECTORS_FILE",
    "Bake",
    "BakeRule",
    "BakeSpec",
    "BiasPlan",
    "BiasSlot",
    "Checkpoint",
    "ExportResult",
    "LmEvalCheck",
    "LoadCheck",
    "ProbeResult",
    "SafetensorsHeader",
    "SourceModel",
    "TensorInfo",
    "UnsupportedArchitecture",
    "VerifyReport",
    "bake_in_memory",
    "baked_deltas",
    "check_supported",
    "copy_file",
    "dtype_name",
    "export_checkpoint",
    "export_name",
    "front_matter",
    "hand_loglikelihood",
    "inspect_export",
    "link_file",
    "lm_eval_check",
    "lm_eval_request",
    "load_snippet",
    "load_source_config",
    "logits_of",
    "model_dims",
    "open_checkpoint",
    "parse_bake_spec",
    "patch_tensor",
    "plan_biases",
    "prepare_target",
    "quiet_loading",
    "read_export_block",
    "read_header",
    "read_tensor",
    "render_model_card",
    "resolve_bakes",
    "rule_for",
    "stored_deltas",
    "sum_deltas",
    "tensor_bytes",
    "unbake_checkpoint",
    "update_model_card",
    "verify_export",
    "write_shard",
]

_SOURCES = {
    "BIAS_SHARD": "export",
    "Bake": "bakes",
    "BakeRule": "architectures",
    "BakeSpec": "bakes",
    "BiasPlan": "plan",
    "BiasSlot": "architectures",
    "CONFIG_KEY": "export",
    "Checkpoint": "safetensors_io",
    "DTYPES": "safetensors_io",
    "EXPORT_FORMAT": "export",
    "ExportResult": "export",
    "INDEX_FILE": "safetensors_io",
    "LmEvalCheck": "lm_eval_parity",
    "LoadCheck": "verify",
    "META_DIR": "export",
    "ORIGINAL_BIASES": "export",
    "POSITION_CAVEAT": "model_card",
    "PROBES": "verify",
    "ProbeResult": "verify",
    "RENAMED_SINGLE": "export",
    "REPLACED_FILES": "export",
    "RULES": "architectures",
    "SINGLE_FILE": "safetensors_io",
    "SOURCE_COPIES": "export",
    "SafetensorsHeader": "safetensors_io",
    "SourceModel": "source",
    "TOLERANCES": "verify",
    "TOLERANCE_FP32": "verify",
    "TensorInfo": "safetensors_io",
    "UnsupportedArchitecture": "architectures",
    "VECTORS_FILE": "export",
    "VerifyReport": "verify",
    "bake_in_memory": "memory",
    "baked_deltas": "inspection",
    "check_supported": "architectures",
    "copy_file": "safetensors_io",
    "dtype_name": "safetensors_io",
    "export_checkpoint": "export",
    "export_name": "bakes",
    "front_matter": "model_card",
    "hand_loglikelihood": "lm_eval_parity",
    "inspect_export": "inspection",
    "link_file": "safetensors_io",
    "lm_eval_check": "lm_eval_parity",
    "lm_eval_request": "lm_eval_parity",
    "load_snippet": "model_card",
    "load_source_config": "source",
    "logits_of": "lm_eval_parity",
    "model_dims": "source",
    "open_checkpoint": "safetensors_io",
    "parse_bake_spec": "bakes",
    "patch_tensor": "safetensors_io",
    "plan_biases": "plan",
    "prepare_target": "export",
    "quiet_loading": "lm_eval_parity",
    "read_export_block": "export",
    "read_header": "safetensors_io",
    "read_tensor": "safetensors_io",
    "render_model_card": "model_card",
    "resolve_bakes": "bakes",
    "rule_for": "architectures",
    "stored_deltas": "inspection",
    "sum_deltas": "plan",
    "tensor_bytes": "safetensors_io",
    "unbake_checkpoint": "unbake",
    "update_model_card": "model_card",
    "verify_export": "verify",
    "write_shard": "safetensors_io",
}


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
