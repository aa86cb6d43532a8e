"""``caa-bake verify`` for a baked GGUF: file-level checks, then a real llama.cpp.

The reference is llama.cpp itself: the *source* GGUF with llama.cpp's own control vector
adding the same per-block vector (the baked bias minus the source's) to the block output.
Checks, in order:

1. files: the export names its source's sha256 (``caa_bake.source_sha256``) and the source
   matches; every source tensor is byte-identical in the export except the steered biases,
   and the export has no other tensor.
2. as stored (quantization kept): baked vs source + control vector on probe prompts —
   max |Δlogit| over all positions, the cosine between the logit shifts (baked - plain vs
   control - plain) at the last position, greedy continuations. In a quantized GGUF llama.cpp
   quantizes activations before each matmul, so the "bias inside the MLP" and "vector after
   the block" can round differently and the two do not match exactly: these numbers are
   reported and the shift cosine must be >= :data:`SHIFT_COSINE_MIN`.
3. exact, in F32: both files dequantized to F32 (temporary copies) and compared the same way:
   max |Δlogit| <= :data:`GGUF_TOLERANCE` and every greedy continuation equal. A source that
   is already F32 needs no copy (check 2 is then the exact one).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caa_bake.bake.gguf_bake import GGUF_FORMAT, read_gguf
from caa_bake.bake.gguf_llama import GgufRunner, dequantize_gguf, require_llama_cpp
from caa_bake.bake.verify import PROBES
from caa_bake.core import CaaBakeError, file_sha256

__all__ = [
    "GGUF_TOLERANCE",
    "SHIFT_COSINE_MIN",
    "GgufComparison",
    "GgufVerifyReport",
    "compare_in_llama",
    "gguf_deltas",
    "verify_gguf",
]

GGUF_TOLERANCE = 1e-4  # F32 GGUF, f32 KV cache: SmolLM2 measured ~1e-5
SHIFT_COSINE_MIN = 0.9


@dataclass(frozen=True)
class GgufComparison:
    """Baked vs source + control vector on the probes, in one precision."""

    label: str
    max_dlogit: float
    shift_cosines: Sequence[float]
    greedy_agree: Sequence[bool]

    @property
    def min_cosine(self) -> float:
        return min(self.shift_cosines, default=float("nan"))

    def line(self) -> str:
        return (
            f"{self.label}: max |Δlogit| baked vs control vector at all positions "
            f"{self.max_dlogit:.3g}; last-token shift cosine "
            + ", ".join(f"{c:.4f}" for c in self.shift_cosines)
            + f"; greedy continuations agree {sum(self.greedy_agree)}/{len(self.greedy_agree)}"
        )


@dataclass
class GgufVerifyReport:
    """Everything the GGUF verification measured; ``ok`` says whether it passed."""

    export: Path
    source: Path
    steered: dict[int, float]  # block -> norm of the baked delta
    byte_problems: list[str]
    stored: GgufComparison
    exact: GgufComparison | None
    quantized: bool
    tolerance: float = GGUF_TOLERANCE
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        fine = not self.byte_problems
        exact = self.exact if self.exact is not None or self.quantized else self.stored
        if exact is not None:
            fine = fine and exact.max_dlogit <= self.tolerance and all(exact.greedy_agree)
        if self.quantized:
            fine = fine and self.stored.min_cosine >= SHIFT_COSINE_MIN
        return fine

    def lines(self) -> list[str]:
        """The report as printed by ``caa-bake verify``."""
        blocks = ", ".join(f"{layer} (|delta| {norm:.3g})" for layer, norm in self.steered.items())
        out = [
            f"export: {self.export}",
            f"source: {self.source}",
            f"steered blocks: {blocks}",
            "files: every source tensor byte-identical, no other change: "
            + ("yes" if not self.byte_problems else "NO: " + "; ".join(self.byte_problems[:5])),
            "llama.cpp (f32 KV cache), reference: the source with llama.cpp's control vector",
            self.stored.line(),
        ]
        if self.exact is not None:
            out.append(self.exact.line())
        exact = self.exact if self.exact is not None or self.quantized else self.stored
        if exact is not None:
            out.append(
                f"exact check ({exact.label}): max |Δlogit| {exact.max_dlogit:.3g} "
                f"(target <= {self.tolerance:g}); greedy continuations must all agree"
            )
        if self.quantized:
            out.append(
                f"quantized ({self.stored.label}): shift cosine >= {SHIFT_COSINE_MIN} required; "
                "|Δlogit| is information (activation quantization rounds differently)"
            )
        out += self.notes
        out.append("verify: OK" if self.ok else "verify: FAILED")
        return out


def _tensors(reader: Any) -> dict[str, Any]:
    return {t.name: t for t in reader.tensors}


def gguf_deltas(export: Any, source: Any) -> tuple[dict[int, np.ndarray], list[str]]:
    """Per-block ``ffn_down`` bias the export adds (export bias minus source bias), and
    every other difference between the two files' tensors (empty: only biases changed)."""
    new, old = _tensors(export.reader), _tensors(source.reader)
    problems = [f"{name} missing" for name in old if name not in new]
    deltas: dict[int, np.ndarray] = {}
    for name, tensor in new.items():
        base = old.get(name)
        if name.startswith("blk.") and name.endswith(".ffn_down.bias"):
            value = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
            if base is not None:
                value = value - np.asarray(base.data, dtype=np.float32).reshape(-1)
            if np.any(value != 0):
                deltas[int(name.split(".")[1])] = value
            continue
        if base is None:
            problems.append(f"{name} added")
        elif base.tensor_type != tensor.tensor_type or bytes(base.data.tobytes()) != bytes(
            tensor.data.tobytes()
        ):
            problems.append(f"{name} differs")
    return dict(sorted(deltas.items())), problems


def _find_source(export: Any, source: Path | None) -> Path:
    field_ = export.reader.get_field("caa_bake.source_sha256")
    recorded = str(field_.contents()) if field_ is not None else ""
    fmt = export.reader.get_field("caa_bake.format")
    if fmt is None or str(fmt.contents()) != GGUF_FORMAT or not recorded:
        raise CaaBakeError(f"{export.path.name} is not a GGUF written by caa-bake export")
    if source is None:
        from caa_bake.models import GGUF_SHA256, find_gguf

        if recorded != GGUF_SHA256:
            raise CaaBakeError(
                f"{export.path.name} was baked from a GGUF with sha256 {recorded[:12]}; "
                "pass --source path/to/that.gguf"
            )
        source = find_gguf()
    source = Path(source)
    if not source.is_file():
        raise CaaBakeError(f"source GGUF {source} does not exist")
    digest = file_sha256(source)
    if digest != recorded:
        raise CaaBakeError(
            f"{source.name} (sha256 {digest[:12]}) is not the source of {export.path.name} "
            f"(baked from {recorded[:12]})"
        )
    return source


def _runs(
    path: Path, prompts: Sequence[Sequence[int]], steps: int, deltas: dict[int, np.ndarray] | None
) -> tuple[list[np.ndarray], list[np.ndarray], list[list[int]]]:
    """(plain logits, steered logits, steered greedy) per prompt; deltas None: the file as is."""
    n_ctx = max(len(p) for p in prompts) + steps + 8
    plain: list[np.ndarray] = []
    steered: list[np.ndarray] = []
    greedy: list[list[int]] = []
    with GgufRunner(path, n_ctx=n_ctx) as runner:
        if deltas is not None:
            plain = [runner.logits(ids) for ids in prompts]
            runner.set_control(deltas)
        steered = [runner.logits(ids) for ids in prompts]
        greedy = [runner.greedy(ids, steps) for ids in prompts]
    return plain, steered, greedy


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    denom = float(np.linalg.norm(a64) * np.linalg.norm(b64))
    return float(a64 @ b64 / denom) if denom > 0 else float("nan")


def compare_in_llama(
    baked: Path,
    source: Path,
    deltas: dict[int, np.ndarray],
    prompts: Sequence[Sequence[int]],
    steps: int,
    label: str,
) -> GgufComparison:
    """Baked file vs source file + llama.cpp control vector (``deltas``) on ``prompts``."""
    plain, control, greedy_control = _runs(source, prompts, steps, deltas)
    _, logits, greedy_baked = _runs(baked, prompts, steps, None)
    return GgufComparison(
        label=label,
        max_dlogit=max(float(np.abs(a - b).max()) for a, b in zip(logits, control, strict=True)),
        shift_cosines=[
            _cosine(b[-1] - p[-1], c[-1] - p[-1])
            for b, c, p in zip(logits, control, plain, strict=True)
        ],
        greedy_agree=[a == b for a, b in zip(greedy_baked, greedy_control, strict=True)],
    )


def verify_gguf(
    export: Path,
    *,
    source: Path | None = None,
    probes: Sequence[str] = PROBES,
    new_tokens: int = 8,
    exact: bool = True,
    workdir: Path | None = None,
) -> GgufVerifyReport:
    """Compare a baked GGUF with its source + llama.cpp's control vector (module docstring).

    Args:
        export: a ``.gguf`` written by ``caa-bake export --model X.gguf``.
        source: the source GGUF (default: the embedded SmolLM2 GGUF when it is the source).
        probes: prompt texts (tokenized by llama.cpp, with BOS).
        new_tokens: greedy tokens per probe.
        exact: also compare F32-dequantized copies when the source is quantized.
        workdir: where the F32 copies go (default: a temporary folder, removed after).
    """
    from gguf import GGMLQuantizationType

    require_llama_cpp()
    info = read_gguf(Path(export))
    source_path = _find_source(info, source)
    src = read_gguf(source_path)
    deltas, problems = gguf_deltas(info, src)
    if not deltas:
        raise CaaBakeError(f"{info.path.name} adds no ffn_down bias to its source")
    if 0 in deltas:
        raise CaaBakeError(
            "a bias baked into block 0 has no llama.cpp control-vector counterpart "
            "(its control vectors start at block 1); verify cannot compare it"
        )
    floats = {GGMLQuantizationType.F32, GGMLQuantizationType.F16}
    quantized = any(t.tensor_type not in floats for t in src.reader.tensors)
    with GgufRunner(src.path, vocab_only=True) as runner:
        prompts = [runner.tokenize(text) for text in probes]
    label = "as stored (quantized)" if quantized else "as stored (F32/F16)"
    stored = compare_in_llama(info.path, src.path, deltas, prompts, new_tokens, label)
    exact_cmp = None
    notes = [f"probes: {len(prompts)} prompts tokenized by llama.cpp, {new_tokens} greedy tokens"]
    if quantized and exact:
        with tempfile.TemporaryDirectory(dir=workdir, prefix=".caa-bake-f32-") as tmp:
            f32_source = dequantize_gguf(src, Path(tmp) / "source-f32.gguf")
            f32_baked = dequantize_gguf(info, Path(tmp) / "baked-f32.gguf")
            exact_cmp = compare_in_llama(
                f32_baked, f32_source, deltas, prompts, new_tokens, "dequantized to F32"
            )
    elif quantized:
        notes.append("exact F32 check skipped (--no-f32): only the quantized numbers above")
    return GgufVerifyReport(
        export=info.path,
        source=src.path,
        steered={layer: float(np.linalg.norm(d)) for layer, d in deltas.items()},
        byte_problems=problems,
        stored=stored,
        exact=exact_cmp,
        quantized=quantized,
        notes=notes,
    )
