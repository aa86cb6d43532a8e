"""Bake steering vectors straight into a GGUF file (llama.cpp, Ollama, LM Studio).

The new GGUF is the source file with ``sum(multiplier x vector[L])`` added as an F32
``blk.L.ffn_down.bias`` (or added to an existing one, written back as F32). Everything else
is copied at the file level with the ``gguf`` package's reader/writer: every other tensor
byte for byte (the source quantization is kept), every metadata key/value pair in order,
plus provenance under ``caa_bake.*``. Tensors are streamed from the memory-mapped source
one at a time; the output is written to a temporary file beside the target and renamed
into place after it has been re-read and checked, and the source is opened read-only.
Nothing time- or path-dependent is recorded, so the same inputs give the same bytes.

Only architectures whose llama.cpp graph reads ``ffn_down`` bias are accepted (see
:data:`GGUF_ARCHITECTURES`); a vector must come from the weights the GGUF dequantizes to
(:func:`gguf_model_ref`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from caa_bake.bake.bakes import Bake
from caa_bake.bake.plan import sum_deltas
from caa_bake.core import CaaBakeError, atomic_file, file_sha256, progress

if TYPE_CHECKING:
    from gguf import GGUFReader

    from caa_bake.models import ModelRef

__all__ = [
    "GGUF_ARCHITECTURES",
    "GGUF_FORMAT",
    "GgufBakeResult",
    "GgufInfo",
    "bake_gguf",
    "gguf_model_ref",
    "open_reader",
    "read_gguf",
]

GGUF_FORMAT = "caa-bake-gguf/1"
_PREFIX = "caa_bake."

#: GGUF ``general.architecture`` -> why llama.cpp honours ``blk.L.ffn_down.bias`` there.
GGUF_ARCHITECTURES: dict[str, str] = {
    "llama": (
        "llama.cpp's llama graph (src/models/llama.cpp) creates ffn_down_b as an optional "
        "tensor (TENSOR_NOT_REQUIRED) for dense blocks and passes it to build_ffn, which adds "
        "it after the down projection, before the residual add"
    ),
}


@dataclass(frozen=True)
class GgufInfo:
    """What the bake needs from a GGUF header."""

    path: Path
    architecture: str
    n_layers: int
    hidden: int
    tensors: tuple[str, ...]
    reader: Any = field(default=None, repr=False, compare=False)  # the open GGUFReader


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@functools.cache
def _reader_class() -> type[GGUFReader]:
    """``GGUFReader`` parsing through a plain ndarray view of its memory map (no copy).

    The stock reader slices an ``np.memmap`` once per metadata value, and the memmap
    subclass's per-slice bookkeeping dominated: the SmolLM2 GGUF's 49k-token vocabulary took
    ~8 s to parse here, ~3 s through the view (same fields and tensors, tested).
    """
    from gguf import GGUFReader

    class _Reader(GGUFReader):
        @property
        def data(self) -> Any:
            return self._view

        @data.setter
        def data(self, value: Any) -> None:
            self._view = value.view(np.ndarray) if isinstance(value, np.memmap) else value

    return _Reader


def open_reader(path: Path) -> GGUFReader:
    """A read-only ``GGUFReader`` of ``path`` (see :func:`_reader_class`)."""
    return _reader_class()(path, "r")


def _open(path: Path) -> GGUFReader:
    """Open ``path`` read-only; a corrupted or truncated file -> one clear line."""
    if not path.is_file():
        raise CaaBakeError(f"GGUF file {path} does not exist")
    try:
        reader = open_reader(path)
    except (ValueError, KeyError, IndexError, TypeError, OSError) as err:
        raise CaaBakeError(
            f"{path} is not a readable GGUF file (corrupted or truncated?): {_first_line(err)}"
        ) from None
    size = path.stat().st_size
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size or tensor.data.nbytes != tensor.n_bytes:
            raise CaaBakeError(
                f"{path} is truncated: tensor {tensor.name} ends at byte "
                f"{tensor.data_offset + tensor.n_bytes}, the file has {size}"
            )
    return reader


def _field(reader: GGUFReader, key: str) -> Any:
    found = reader.get_field(key)
    return None if found is None else found.contents()


def read_gguf(path: Path) -> GgufInfo:
    """Read and check ``path``'s header: a GGUF whose llama.cpp graph reads ffn_down bias.

    Parsing a GGUF's metadata takes a few seconds for a large vocabulary.

    Raises:
        CaaBakeError: unreadable/truncated file, big-endian file, an architecture outside
            :data:`GGUF_ARCHITECTURES`, a mixture-of-experts model, or missing dimensions.
    """
    return _inspect(Path(path), _open(Path(path)))


def _inspect(path: Path, reader: GGUFReader) -> GgufInfo:
    from gguf import GGUFEndian

    if reader.endianess != GGUFEndian.LITTLE:
        raise CaaBakeError(f"{path} is a big-endian GGUF; only little-endian files are baked")
    arch = str(_field(reader, "general.architecture") or "")
    if arch not in GGUF_ARCHITECTURES:
        accepted = ", ".join(sorted(GGUF_ARCHITECTURES))
        raise CaaBakeError(
            f"{path.name}: GGUF architecture '{arch or '?'}' is not supported for baking; "
            f"accepted: {accepted} (llama.cpp's graph for them reads an optional "
            "blk.L.ffn_down.bias; for other architectures it is not known to)"
        )
    if int(_field(reader, f"{arch}.expert_count") or 0) > 0:
        raise CaaBakeError(
            f"{path.name} is a mixture-of-experts {arch} model; llama.cpp reads ffn_down "
            "bias only in dense blocks"
        )
    n_layers = _field(reader, f"{arch}.block_count")
    hidden = _field(reader, f"{arch}.embedding_length")
    if n_layers is None or hidden is None:
        raise CaaBakeError(f"{path.name} lacks {arch}.block_count or {arch}.embedding_length")
    names = tuple(t.name for t in reader.tensors)
    return GgufInfo(path, arch, int(n_layers), int(hidden), names, reader)


def gguf_model_ref(path: Path, *, vector_from: ModelRef | None = None) -> tuple[ModelRef, str]:
    """The safetensors model ``path`` dequantizes to (where its vectors come from), and sha256.

    A GGUF caa-bake knows by sha256 (``caa-bake models list``) maps to its converted folder;
    otherwise ``vector_from`` must be a folder caa-bake converted from this very file (its
    marker names the GGUF's sha256).
    """
    from caa_bake.models import KNOWN_MODELS, MARKER_FILE, resolve_model

    digest = file_sha256(Path(path))
    for entry in KNOWN_MODELS.values():
        if entry.gguf_sha256 == digest:
            ref = resolve_model(entry.name)
            if vector_from is not None and vector_from.weights_fingerprint != (
                ref.weights_fingerprint
            ):
                raise CaaBakeError(
                    f"{Path(path).name} dequantizes to {entry.name}, not to "
                    f"{vector_from.model_id}; drop --vector-from"
                )
            return ref, digest
    if vector_from is None:
        known = ", ".join(KNOWN_MODELS)
        raise CaaBakeError(
            f"{Path(path).name} (sha256 {digest[:12]}) is not a GGUF caa-bake knows the "
            f"weights of ({known}); pass --vector-from FOLDER, a folder converted from this "
            "GGUF by caa-bake, so the vector comes from the same weights"
        )
    marker: Any = {}
    with contextlib.suppress(OSError, ValueError):
        marker = json.loads((vector_from.path / MARKER_FILE).read_text(encoding="utf-8"))
    named = marker.get("gguf_sha256") if isinstance(marker, dict) else None
    if named != digest:
        raise CaaBakeError(
            f"{vector_from.model_id} was not converted from {Path(path).name} (its "
            f"{MARKER_FILE} names GGUF sha256 {str(named)[:12]}, the file has {digest[:12]})"
        )
    return vector_from, digest


@dataclass
class GgufBakeResult:
    """What :func:`bake_gguf` wrote."""

    path: Path
    source: Path
    architecture: str
    bakes: list[Bake]
    steered: dict[str, str] = field(default_factory=dict)  # bias name -> added / patched
    copied: int = 0

    def summary(self) -> list[str]:
        lines = [f"source GGUF: {self.source} ({self.architecture})"]
        for bake in self.bakes:
            lines.append(f"baked {bake.behavior} x {bake.multiplier:g} into block {bake.layer}")
        for name, how in self.steered.items():
            lines.append(f"  {name}: {how} (F32)")
        lines.append(f"{self.copied} tensors copied byte for byte")
        return lines


def _check_vectors(bakes: Sequence[Bake], fingerprint: str) -> None:
    for bake in bakes:
        made_from = bake.vector.metadata.get("weights_fingerprint", "")
        if made_from != fingerprint:
            what = f"weights {made_from[:12]}" if made_from else "no recorded weights"
            raise CaaBakeError(
                f"{bake.behavior}: the vector was extracted from {what}, not from the weights "
                f"this GGUF dequantizes to ({fingerprint[:12]}); extract it from this model"
            )


def _biases(reader: GGUFReader, info: GgufInfo, bakes: Sequence[Bake]) -> dict[str, np.ndarray]:
    """Bias name -> its new F32 value (source bias, if any, plus the summed deltas)."""
    from gguf import GGMLQuantizationType

    tensors = {t.name: t for t in reader.tensors}
    out: dict[str, np.ndarray] = {}
    for layer, delta in sorted(sum_deltas(bakes, info.n_layers, info.hidden).items()):
        weight, bias = f"blk.{layer}.ffn_down.weight", f"blk.{layer}.ffn_down.bias"
        if weight not in tensors:
            raise CaaBakeError(f"{info.path.name} has no tensor {weight}")
        value = delta.numpy().astype(np.float32)
        old = tensors.get(bias)
        if old is not None:
            floats = (GGMLQuantizationType.F32, GGMLQuantizationType.F16)
            if old.tensor_type not in floats or old.data.size != info.hidden:
                raise CaaBakeError(
                    f"{bias} is {old.tensor_type.name} of {old.data.size} values; "
                    f"only an F32/F16 bias of {info.hidden} values can be added to"
                )
            value = np.asarray(old.data, dtype=np.float32).reshape(-1) + value
        if not np.isfinite(value).all():
            raise CaaBakeError(f"{bias} would not be finite; check the vector and multiplier")
        out[bias] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def _metadata(
    reader: GGUFReader,
    source_sha: str,
    fingerprint: str,
    model_id: str,
    bakes: Sequence[Bake],
    steered: dict[str, str],
) -> list[tuple[str, Any, Any, Any]]:
    """Every source key/value (minus ``GGUF.*``, the architecture and old ``caa_bake.*``),
    then the provenance keys."""
    from gguf import GGUFValueType

    pairs: list[tuple[str, Any, Any, Any]] = []
    earlier: list[Any] = []
    for item in reader.fields.values():
        if item.name.startswith(_PREFIX):
            if item.name == f"{_PREFIX}bakes":
                earlier = list(json.loads(str(item.contents())))
            continue
        if item.name.startswith("GGUF.") or item.name == "general.architecture":
            continue
        vtype = item.types[0]
        sub = item.types[-1] if vtype == GGUFValueType.ARRAY else None
        pairs.append((item.name, item.contents(), vtype, sub))
    text = GGUFValueType.STRING
    records = earlier + [bake.record() for bake in bakes]
    provenance = {
        "format": GGUF_FORMAT,
        "source_sha256": source_sha,
        "weights_fingerprint": fingerprint,
        "model_id": model_id,
        "bakes": json.dumps(records, sort_keys=True),
        "steered_tensors": json.dumps(steered, sort_keys=True),
    }
    pairs += [(f"{_PREFIX}{key}", value, text, None) for key, value in provenance.items()]
    return pairs


def bake_gguf(
    source: Path | GgufInfo,
    bakes: Sequence[Bake],
    target: Path,
    *,
    ref: ModelRef,
    source_sha256: str | None = None,
    force: bool = False,
) -> GgufBakeResult:
    """Write ``target``: ``source`` with ``bakes`` added as F32 ``blk.L.ffn_down.bias``.

    ``source`` is a path or what :func:`read_gguf` returned for it (not parsed again).
    ``ref`` is the model ``source`` dequantizes to (:func:`gguf_model_ref`); every vector
    must carry its weights fingerprint.

    Raises:
        CaaBakeError: a bad/unsupported source, a vector from other weights, a layer out of
            range, a wrong vector size, ``target`` is ``source`` or exists without ``force``.
    """
    from gguf import GGMLQuantizationType, GGUFWriter

    known = source if isinstance(source, GgufInfo) else None
    source = source.path if isinstance(source, GgufInfo) else Path(source)
    target = Path(target)
    if target.suffix != ".gguf":
        raise CaaBakeError(f"the output {target} must end in .gguf")
    if target.exists() and source.exists() and os.path.samefile(target, source):
        raise CaaBakeError(f"the output {target} is the source GGUF; the source is never written")
    if target.exists() and not force:
        raise CaaBakeError(f"{target} exists; pass --force to replace it")
    _check_vectors(bakes, ref.weights_fingerprint)
    info = known if known is not None else _inspect(source, _open(source))
    reader = info.reader
    biases = _biases(reader, info, bakes)
    names = set(info.tensors)
    steered = {name: ("patched" if name in names else "added") for name in biases}
    digest = source_sha256 or file_sha256(source)
    pairs = _metadata(reader, digest, ref.weights_fingerprint, ref.model_id, bakes, steered)
    # Source order; a new bias goes right after its block's ffn_down weight.
    order: list[tuple[str, Any]] = []
    for tensor in reader.tensors:
        order.append((tensor.name, biases.get(tensor.name, tensor)))
        bias = tensor.name.removesuffix(".weight") + ".bias"
        if tensor.name.endswith("ffn_down.weight") and bias in biases and bias not in names:
            order.append((bias, biases[bias]))
    with atomic_file(target) as tmp:
        writer = GGUFWriter(tmp, info.architecture)
        writer.data_alignment = reader.alignment
        for key, value, vtype, sub in pairs:
            writer.add_key_value(key, value, vtype, sub_type=sub)
        for name, item in order:
            if isinstance(item, np.ndarray):
                writer.add_tensor_info(
                    name, item.shape, item.dtype, item.nbytes, GGMLQuantizationType.F32
                )
            else:
                data = item.data
                writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, item.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for _name, item in progress(order, desc="writing GGUF", unit="tensor"):
            writer.write_tensor_data(item if isinstance(item, np.ndarray) else item.data)
        writer.close()
    return GgufBakeResult(
        target, source, info.architecture, list(bakes), steered, len(order) - len(biases)
    )
