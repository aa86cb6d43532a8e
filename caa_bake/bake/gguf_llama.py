"""Run a GGUF in a real llama.cpp (llama-cpp-python), and dequantize a GGUF to F32.

:class:`GgufRunner` wraps llama-cpp-python's ``Llama`` for exact comparisons: logits at every
prompt position, greedy continuations, an f32 KV cache by default (llama.cpp's default f16
cache alone moves SmolLM2's logits by ~2e-3), and llama.cpp's own control vector
(``llama_set_adapter_cvec``), the reference a baked ``ffn_down`` bias is compared with.
llama.cpp adds a control vector to a block's output after the residual add (``build_cvec``
in its graphs); its buffer starts at block 1 (block 0 cannot be steered), so block L sits at
offset ``(L - 1) * n_embd`` and is enabled with ``il_start = il_end = L``.

:func:`dequantize_gguf` writes an F32 copy of a GGUF (every tensor dequantized with the
``gguf`` package, metadata kept): in F32 llama.cpp computes without activation
quantization, so baked and control-vector runs agree to float rounding there.

llama-cpp-python is the optional ``llama`` extra (``bash scripts/setup.sh --llama``); without
it :func:`require_llama_cpp` raises one clear line.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from caa_bake.bake.gguf_bake import open_reader
from caa_bake.core import CaaBakeError, atomic_file, progress

__all__ = [
    "LLAMA_CPP_HINT",
    "GgufRunner",
    "dequantize_gguf",
    "llama_cpp_available",
    "require_llama_cpp",
]

LLAMA_CPP_HINT = (
    "llama.cpp checks need llama-cpp-python: bash scripts/setup.sh --llama "
    "(or pip install 'caa-bake[llama]' with CMAKE_ARGS=-DGGML_NATIVE=OFF)"
)
_F32_FILE_TYPE = 0  # llama_ftype LLAMA_FTYPE_ALL_F32


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python can be imported (and its library loaded)."""
    try:
        import llama_cpp  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def require_llama_cpp() -> ModuleType:
    """The ``llama_cpp`` module, or one clear line saying how to install it."""
    try:
        import llama_cpp
    except (ImportError, OSError):
        raise CaaBakeError(LLAMA_CPP_HINT) from None
    return llama_cpp


def dequantize_gguf(source: Path | Any, target: Path) -> Path:
    """Write ``target``: ``source`` with every tensor dequantized to F32 (metadata kept,
    ``general.file_type`` set to all-F32). Streams one tensor at a time; atomic.

    ``source`` is a path, or what :func:`~caa_bake.bake.read_gguf` returned (its open reader
    is reused: parsing a large vocabulary takes seconds). A 135M-parameter model becomes
    ~540 MB; a 7B one ~28 GB.
    """
    from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter
    from gguf.quants import dequantize

    target = Path(target)
    reader = getattr(source, "reader", None)
    if reader is None:
        try:
            reader = open_reader(Path(source))
        except (ValueError, KeyError, IndexError, TypeError, OSError) as err:
            raise CaaBakeError(f"{source} is not a readable GGUF file: {err}") from None
    arch_field = reader.get_field("general.architecture")
    arch = str(arch_field.contents()) if arch_field is not None else ""
    with atomic_file(target) as tmp:
        writer = GGUFWriter(tmp, arch)
        writer.data_alignment = reader.alignment
        for item in reader.fields.values():
            if item.name.startswith("GGUF.") or item.name == "general.architecture":
                continue
            vtype = item.types[0]
            sub = item.types[-1] if vtype == GGUFValueType.ARRAY else None
            value = _F32_FILE_TYPE if item.name == "general.file_type" else item.contents()
            writer.add_key_value(item.name, value, vtype, sub_type=sub)
        for tensor in reader.tensors:
            shape = tuple(int(n) for n in reversed(tensor.shape))  # numpy order
            nbytes = int(np.prod(shape)) * 4
            writer.add_tensor_info(
                tensor.name, shape, np.dtype(np.float32), nbytes, GGMLQuantizationType.F32
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in progress(reader.tensors, desc="dequantizing to F32", unit="tensor"):
            values = dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
            shape = tuple(int(n) for n in reversed(tensor.shape))
            writer.write_tensor_data(np.ascontiguousarray(values.reshape(shape)))
        writer.close()
    return target


@contextlib.contextmanager
def _quiet_native() -> Iterator[None]:
    """Silence llama.cpp's C-level stderr chatter while loading (file descriptor 2)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class GgufRunner:
    """One GGUF loaded in llama.cpp for exact comparisons (all-position logits, greedy).

    Args:
        path: the GGUF file.
        n_ctx: context length (prompt + generated tokens must fit).
        f32_cache: an F32 KV cache (default; llama.cpp's own default is F16).
        vocab_only: load only the vocabulary (for :meth:`tokenize`; fast).
        threads: CPU threads (default 1: llama.cpp threads spin-wait, and on this project's
            shared 2-core machine two threads ran 10-40x slower than one under load).
    """

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int = 512,
        f32_cache: bool = True,
        threads: int = 1,
        vocab_only: bool = False,
    ) -> None:
        llama_cpp = require_llama_cpp()
        self.path = Path(path)
        if not self.path.is_file():
            raise CaaBakeError(f"GGUF file {self.path} does not exist")
        kv: dict[str, Any] = {}
        if f32_cache:
            kv = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32}
        try:
            with _quiet_native():
                self.llm = llama_cpp.Llama(
                    model_path=str(self.path),
                    n_ctx=n_ctx,
                    n_batch=n_ctx,
                    logits_all=True,
                    n_threads=threads,
                    n_threads_batch=threads,
                    seed=0,
                    verbose=False,
                    vocab_only=vocab_only,
                    **kv,
                )
        except (ValueError, RuntimeError, OSError) as err:
            raise CaaBakeError(
                f"llama.cpp cannot load {self.path.name}: {str(err).strip() or 'load failed'}"
            ) from None
        self._lib = llama_cpp
        self.n_embd = int(self.llm.n_embd())
        self.n_layer = int(llama_cpp.llama_model_n_layer(self.llm._model.model))
        self._buffer: Any = None  # keeps the control vector's memory alive

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's tokenization of ``text`` (with BOS where the model adds one)."""
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def set_control(self, deltas: Mapping[int, Any] | None) -> None:
        """llama.cpp's control vector: add ``deltas[L]`` to block L's output (None: clear)."""
        ctx = self.llm._ctx.ctx
        if not deltas:
            self._lib.llama_set_adapter_cvec(ctx, None, 0, self.n_embd, -1, -1)
            self._buffer = None
            return
        if min(deltas) < 1 or max(deltas) >= self.n_layer:
            raise CaaBakeError(
                f"llama.cpp's control vector covers blocks 1..{self.n_layer - 1}; "
                f"got {sorted(deltas)}"
            )
        data = np.zeros((self.n_layer - 1) * self.n_embd, dtype=np.float32)
        for layer, vec in deltas.items():
            values = np.asarray(vec, dtype=np.float32).reshape(-1)
            if values.size != self.n_embd:
                raise CaaBakeError(
                    f"a block-{layer} vector has {values.size} values, not {self.n_embd}"
                )
            data[(layer - 1) * self.n_embd : layer * self.n_embd] = values
        self._buffer = data
        pointer = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        status = self._lib.llama_set_adapter_cvec(
            ctx, pointer, data.size, self.n_embd, min(deltas), max(deltas)
        )
        if status != 0:
            raise CaaBakeError(f"llama.cpp refused the control vector (status {status})")

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits at every position of ``ids`` (float32, ``[len(ids), vocab]``), fresh cache."""
        self.llm.reset()
        self.llm.eval(list(ids))
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def greedy(self, ids: Sequence[int], steps: int) -> list[int]:
        """``steps`` greedy tokens after ``ids`` (argmax, with the KV cache)."""
        self.llm.reset()
        self.llm.eval(list(ids))
        out: list[int] = []
        for _ in range(steps):
            token = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
            out.append(token)
            if len(out) < steps:
                self.llm.eval([token])
        return out

    def close(self) -> None:
        """Free the model and context now (not at garbage collection)."""
        with contextlib.suppress(AttributeError):
            self.llm.close()

    def __enter__(self) -> GgufRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
