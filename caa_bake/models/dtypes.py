"""Which floating-point type a model runs in: ``--dtype`` parsing, ``auto``, support checks.

Names: ``float32``/``fp32``, ``bfloat16``/``bf16``, ``float16``/``fp16``, and ``auto``.

``auto`` is ``float32``, on CPU by measurement (BENCHMARKS.md, "bfloat16 vs float32"): on
the project's CPU (AVX2, no AMX or AVX512-BF16) bf16 matmuls are emulated and a SmolLM2
forward pass ran ~4x *slower* than in float32, and bf16 moves per-item p_match by a few
hundredths — as much as the steering effects being measured on small models — while bf16
vectors agree with float32 ones to cosine >= 0.999. On CUDA ``auto`` is ``float32`` too
(unchanged; pass ``--dtype float16`` or ``bfloat16`` for large models). Half precision is
always available explicitly where the device runs it natively.

A half-precision dtype the device cannot run natively, or cannot run at all, is refused
with one line saying what to use instead. ``CAA_BAKE_ALLOW_EMULATED_DTYPE=1`` lets an
emulated CPU dtype through (tests and the dtype benchmark use it; it is correct, just slow).
"""

from __future__ import annotations

import os

import torch

from caa_bake.core import CaaBakeError

__all__ = [
    "ALLOW_EMULATED_ENV",
    "AUTO",
    "DTYPE_CHOICES",
    "cpu_has_native",
    "dtype_name",
    "parse_dtype",
    "resolve_dtype",
]

#: environment switch that lets an emulated (slow) half-precision CPU dtype through
ALLOW_EMULATED_ENV = "CAA_BAKE_ALLOW_EMULATED_DTYPE"

_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
#: what ``auto`` resolves to, on every device (see the module docstring)
AUTO = torch.float32
#: what ``--dtype`` accepts, for help texts
DTYPE_CHOICES = "auto, float32 (fp32), bfloat16 (bf16) or float16 (fp16)"


def parse_dtype(name: str) -> torch.dtype | None:
    """A dtype name to a torch dtype; ``auto`` to None (resolved later, per device)."""
    key = name.strip().lower()
    if key == "auto":
        return None
    try:
        return _NAMES[key]
    except KeyError:
        raise CaaBakeError(f"unknown dtype {name!r}; use {DTYPE_CHOICES}") from None


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the form recorded in metadata and results)."""
    return str(dtype).removeprefix("torch.")


def _cpu_flag(name: str) -> bool:
    probe = getattr(torch.cpu, name, None)
    return bool(probe()) if callable(probe) else False


def cpu_has_native(dtype: torch.dtype) -> bool:
    """Whether this CPU runs ``dtype`` matmuls in hardware (float32 always does)."""
    if dtype == torch.bfloat16:
        return _cpu_flag("_is_amx_tile_supported") or _cpu_flag("_is_avx512_bf16_supported")
    if dtype == torch.float16:
        return _cpu_flag("_is_amx_fp16_supported")
    return dtype == torch.float32


def _cpu_features() -> str:
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{capability}, no AMX or AVX512-BF16" if capability else "no AMX or AVX512-BF16"


def _probe(dtype: torch.dtype, device: str) -> None:
    """A tiny matmul in ``dtype`` on ``device``; failure is a user-facing error."""
    try:
        a = torch.ones((4, 4), dtype=dtype, device=device)
        float((a @ a).sum())
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CaaBakeError(
            f"{dtype_name(dtype)} matmuls fail on {device} ({first}); use --dtype float32"
        ) from None


def _check_supported(dtype: torch.dtype, device: str) -> None:
    if dtype == torch.float32:
        return
    name = dtype_name(dtype)
    if device.startswith("cuda"):
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise CaaBakeError("this GPU has no bfloat16 support; use --dtype float16 or float32")
    elif not cpu_has_native(dtype) and os.environ.get(ALLOW_EMULATED_ENV) != "1":
        raise CaaBakeError(
            f"{name} is emulated on this CPU ({_cpu_features()}) and runs many times slower "
            f"than float32; use --dtype float32 (or auto), or set {ALLOW_EMULATED_ENV}=1 "
            "to run it anyway"
        )
    _probe(dtype, device)


def resolve_dtype(name: str | torch.dtype, device: str = "cpu") -> torch.dtype:
    """The dtype to run on ``device`` (``cpu`` or ``cuda[:N]``): ``auto`` resolved, checked.

    Raises CaaBakeError for an unknown name or a dtype the device cannot run (see the module
    docstring for ``auto`` and the emulated-dtype rule).
    """
    dtype = parse_dtype(name) if isinstance(name, str) else name
    if dtype is None:
        return AUTO
    if dtype not in _NAMES.values():
        raise CaaBakeError(f"unsupported dtype {dtype_name(dtype)}; use {DTYPE_CHOICES}")
    _check_supported(dtype, device)
    return dtype
