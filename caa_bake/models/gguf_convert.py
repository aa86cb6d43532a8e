"""Convert a GGUF file once into a plain safetensors checkpoint folder.

transformers dequantizes a GGUF on load (``from_pretrained(..., gguf_file=...)``) but then
refuses to ``save_pretrained`` the model ("quantized with gguf and is not serializable")
although its weights are dense. Clearing ``model.hf_quantizer`` and
``config.quantization_config`` makes it an ordinary model. The folder gets the weights in
the requested dtype, the tokenizer built from the GGUF (building it takes ~20 s for a
150k-token vocabulary, so it is saved rather than rebuilt), the chat template, the
generation config, and finally a provenance marker (written last: a folder without it is
incomplete). The result is reloaded and checked: no missing or unexpected weights, and the
same logits as the GGUF-loaded model.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caa_bake.core import is_quiet
from caa_bake.models.embedded import MARKER_FILE, share_folder
from caa_bake.models.hub import quiet_hf_progress

if TYPE_CHECKING:
    import torch

__all__ = ["VERIFY_PROMPT", "convert_gguf"]

VERIFY_PROMPT = "Converted once, checked once: (A)"


def convert_gguf(
    gguf: Path, out: Path, *, dtype: torch.dtype, marker: dict[str, Any] | None = None
) -> None:
    """Dequantize ``gguf`` into ``out`` (an existing, empty folder) as ``dtype`` safetensors.

    ``marker`` (provenance: hashes, source) is written to ``out / MARKER_FILE`` last,
    together with the dtype and the library versions.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sink: contextlib.AbstractContextManager[object] = (
        contextlib.redirect_stderr(io.StringIO()) if is_quiet() else contextlib.nullcontext()
    )
    with quiet_hf_progress(), sink, _errors_only():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=dtype
        )
    gc.collect()  # the dequantized float32 state dict is garbage now
    _check_dense(model, dtype)
    model.eval()
    model.hf_quantizer = None
    model.config.quantization_config = None
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    for title in ("_name_or_path", "_model_name_or_path"):  # the GGUF's title, not a path
        with contextlib.suppress(AttributeError):
            delattr(model.config, title)
    model.save_pretrained(out, max_shard_size="500MB")
    tokenizer.save_pretrained(out)
    _check_reload(out, model, tokenizer, dtype)
    del model
    gc.collect()
    info = {
        **(marker or {}),
        "dtype": str(dtype).removeprefix("torch."),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "created_by": "caa-bake",
    }
    (out / MARKER_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    share_folder(out)


@contextlib.contextmanager
def _errors_only() -> Iterator[None]:
    """Hide transformers' warnings while loading a GGUF.

    It warns that packed GGUF weights are fastest in float32, which does not apply here:
    the weights are dequantized (checked by :func:`_check_dense`).
    """
    from transformers.utils import logging as tf_logging

    level = tf_logging.get_verbosity()
    tf_logging.set_verbosity_error()
    try:
        yield
    finally:
        tf_logging.set_verbosity(level)


def _check_dense(model: Any, dtype: torch.dtype) -> None:
    """Refuse a model whose weights transformers kept packed in GGUF blocks (``kernels``)."""
    packed = [n for n, p in model.named_parameters() if p.dtype != dtype]
    if packed:
        raise RuntimeError(
            f"transformers kept {len(packed)} GGUF weights packed (e.g. {packed[0]}); "
            "they must be dequantized to be saved"
        )


def _check_reload(out: Path, reference: Any, tokenizer: Any, dtype: torch.dtype) -> None:
    """Reload ``out``: no missing/unexpected keys, quantizer gone, same logits as ``reference``."""
    import torch
    from transformers import AutoModelForCausalLM

    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    if "quantization_config" in config:
        raise RuntimeError(f"{out}/config.json still declares a quantization_config")
    with quiet_hf_progress():
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            str(out), dtype=dtype, output_loading_info=True
        )
    reloaded, info = loaded[0], loaded[1]
    bad = {k: sorted(map(str, v)) for k, v in info.items() if k != "error_msgs" and v}
    if bad or info.get("error_msgs"):
        raise RuntimeError(f"the converted checkpoint in {out} does not reload cleanly: {info}")
    ids = tokenizer(VERIFY_PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = reference(input_ids=ids).logits.float()
        got = reloaded.eval()(input_ids=ids).logits.float()
    del reloaded
    if not torch.allclose(want, got, atol=1e-4, rtol=1e-4):
        delta = (want - got).abs().max().item()
        raise RuntimeError(f"the converted checkpoint's logits differ from the GGUF's by {delta:g}")
