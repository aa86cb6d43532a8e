"""Safetensors at the file level: read headers, stream or link files, patch one tensor's bytes.

A safetensors file is ``<u64 little-endian N><N bytes of JSON header><data>``. The header
maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
relative to the start of the data) plus an optional ``__metadata__`` dict of strings.
Nothing here unpickles anything or loads a whole model: tensors are read one at a time by
seeking to their bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

from caa_bake.core import CaaBakeError, default_mode

__all__ = [
    "DTYPES",
    "INDEX_FILE",
    "SINGLE_FILE",
    "Checkpoint",
    "SafetensorsHeader",
    "TensorInfo",
    "copy_file",
    "dtype_name",
    "link_file",
    "open_checkpoint",
    "patch_tensor",
    "read_header",
    "read_tensor",
    "tensor_bytes",
    "write_shard",
]

#: safetensors dtype name -> (torch dtype, bytes per element)
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
    "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1),
}
_NAME_OF = {torch_dtype: name for name, (torch_dtype, _size) in DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit
_FICLONE = 0x40049409  # ioctl: reflink a whole file (btrfs, xfs, ...)
_CHUNK = 1 << 30


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in a header: dtype name, shape, byte range within the data."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype][0]

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    """A parsed, validated header; ``data_start`` is the file offset of the first data byte."""

    path: Path
    data_start: int
    tensors: Mapping[str, TensorInfo]
    metadata: Mapping[str, str]

    def offset_of(self, name: str) -> int:
        """File offset of the first byte of tensor ``name``."""
        return self.data_start + self.tensors[name].begin


def _corrupt(path: Path, why: str) -> CaaBakeError:
    return CaaBakeError(
        f"corrupt safetensors header in {path}: {why}; re-download or re-save the checkpoint"
    )


def _parse_entry(path: Path, name: str, raw: object, data_size: int) -> TensorInfo:
    if not isinstance(raw, dict):
        raise _corrupt(path, f"entry {name!r} is not an object")
    dtype, shape, offsets = raw.get("dtype"), raw.get("shape"), raw.get("data_offsets")
    if dtype not in DTYPES:
        raise _corrupt(path, f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise _corrupt(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
    ):
        raise _corrupt(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    expected = math.prod(shape) * DTYPES[dtype][1]
    if not 0 <= begin <= end <= data_size or end - begin != expected:
        raise _corrupt(
            path,
            f"tensor {name!r} claims bytes {begin}-{end} ({expected} expected) "
            f"of a {data_size}-byte data section",
        )
    return TensorInfo(dtype, tuple(shape), begin, end)


def read_header(path: Path) -> SafetensorsHeader:
    """Parse and check the header of the safetensors file at ``path``.

    Raises:
        CaaBakeError: the file is missing, truncated, or its header is not valid.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) != 8:
                raise _corrupt(path, "file is shorter than 8 bytes")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(_MAX_HEADER, size - 8):
                raise _corrupt(path, f"header length {length} exceeds the file size {size}")
            text = handle.read(length)
    except FileNotFoundError:
        raise CaaBakeError(f"weights file not found: {path}") from None
    except OSError as exc:
        raise CaaBakeError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        parsed = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"header is not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise _corrupt(path, "header is not a JSON object")
    data_start = 8 + length
    data_size = size - data_start
    metadata_raw = parsed.pop("__metadata__", None) or {}
    if not isinstance(metadata_raw, dict):
        raise _corrupt(path, "__metadata__ is not an object")
    tensors = {name: _parse_entry(path, name, raw, data_size) for name, raw in parsed.items()}
    return SafetensorsHeader(
        path, data_start, tensors, {str(k): str(v) for k, v in metadata_raw.items()}
    )


def read_tensor(header: SafetensorsHeader, name: str) -> torch.Tensor:
    """Read one tensor (a copy, in its stored dtype) by seeking to its bytes."""
    info = header.tensors[name]
    with header.path.open("rb") as handle:
        handle.seek(header.offset_of(name))
        data = handle.read(info.nbytes)
    if len(data) != info.nbytes:
        raise _corrupt(header.path, f"tensor {name!r} is truncated")
    flat = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return flat.view(info.torch_dtype).reshape(info.shape).clone()


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw little-endian bytes of ``tensor`` as safetensors stores them."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def patch_tensor(header: SafetensorsHeader, name: str, target: Path, value: torch.Tensor) -> None:
    """Overwrite tensor ``name`` in ``target`` (a copy of ``header.path``) with ``value``.

    ``value`` must have the stored shape and dtype; only that tensor's bytes change.
    """
    info = header.tensors[name]
    if value.dtype != info.torch_dtype or tuple(value.shape) != info.shape:
        raise ValueError(
            f"{name}: patch is {value.dtype} {tuple(value.shape)}, "
            f"file holds {info.torch_dtype} {info.shape}"
        )
    data = tensor_bytes(value)
    with Path(target).open("r+b") as handle:
        handle.seek(header.offset_of(name))
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def dtype_name(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype (``torch.bfloat16`` -> ``BF16``)."""
    return _NAME_OF[dtype]


def copy_file(src: Path, dst: Path, *, on_bytes: Callable[[int], None] | None = None) -> None:
    """Copy ``src`` to a new file ``dst``, in the kernel where possible (copy_file_range).

    Like ``cp``, the copy gets the source's permission bits.

    ``on_bytes`` is called with the number of bytes after each chunk (for progress bars).
    """
    size = Path(src).stat().st_size
    with Path(src).open("rb") as fin, Path(dst).open("xb") as fout:
        done = 0
        try:
            while done < size:
                sent = os.copy_file_range(fin.fileno(), fout.fileno(), min(_CHUNK, size - done))
                if sent == 0:
                    break
                done += sent
                if on_bytes is not None:
                    on_bytes(sent)
        except OSError:
            # no in-kernel copy between these files (another filesystem type): stream it
            fin.seek(done)
            fout.seek(done)
            fout.truncate(done)
            while chunk := fin.read(64 << 20):
                fout.write(chunk)
                done += len(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
        if done != size:
            raise CaaBakeError(f"{src} changed size while it was being copied; try again")
        os.fchmod(fout.fileno(), os.fstat(fin.fileno()).st_mode & 0o777)


def link_file(src: Path, dst: Path) -> Literal["reflink", "hardlink", "copy"]:
    """Make ``dst`` share ``src``'s data: a reflink if the filesystem can, else a hard link.

    Falls back to a copy (e.g. across filesystems). Returns the method used. A hard link is
    the same file as the source: never modify ``dst`` in place afterwards.
    """
    src, dst = Path(src), Path(dst)
    with src.open("rb") as fin, dst.open("xb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
            return "reflink"
        except OSError:
            pass
    dst.unlink()
    try:
        os.link(src, dst)
        return "hardlink"
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            dst.unlink()
    copy_file(src, dst)
    return "copy"


def write_shard(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write small ``tensors`` as a new safetensors file (same inputs, same bytes).

    Each tensor is copied first, so views of one tensor can be saved side by side. The file
    gets the usual permissions under the umask (the safetensors writer makes it owner-only).
    """
    save_file(
        {name: t.detach().to("cpu").clone() for name, t in tensors.items()},
        str(path),
        metadata={"format": "pt"},
    )
    Path(path).chmod(default_mode())


SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class Checkpoint:
    """The safetensors weights of a checkpoint folder, read from headers only.

    Attributes:
        path: the folder.
        indexed: True when the folder has ``model.safetensors.index.json``.
        index: the parsed index (``{}`` for a single-file checkpoint).
        shards: file name -> header, for every weights file.
        weight_map: tensor name -> file name.
    """

    path: Path
    indexed: bool
    index: Mapping[str, object]
    shards: Mapping[str, SafetensorsHeader]
    weight_map: Mapping[str, str]

    def header_of(self, tensor: str) -> SafetensorsHeader:
        """The header of the shard that holds ``tensor``."""
        return self.shards[self.weight_map[tensor]]

    def info(self, tensor: str) -> TensorInfo:
        """The header entry of ``tensor``."""
        return self.header_of(tensor).tensors[tensor]

    @property
    def total_bytes(self) -> int:
        """Size of all weight files together."""
        return sum(h.path.stat().st_size for h in self.shards.values())


def _read_index(path: Path) -> dict[str, object]:
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CaaBakeError(f"cannot read {path}: {exc}") from None
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise CaaBakeError(f"{path} has no weight_map; the checkpoint index is corrupt")
    return index


def open_checkpoint(folder: Path) -> Checkpoint:
    """Read the index (if any) and every shard header of the checkpoint in ``folder``.

    Raises:
        CaaBakeError: no safetensors weights, a shard named in the index is missing, a
            header is corrupt, or the index names a tensor its shard does not hold.
    """
    folder = Path(folder)
    index_path = folder / INDEX_FILE
    if index_path.is_file():
        index = _read_index(index_path)
        raw_map = index["weight_map"]
        assert isinstance(raw_map, dict)
        weight_map = {str(k): str(v) for k, v in raw_map.items()}
        shards: dict[str, SafetensorsHeader] = {}
        for name in sorted(set(weight_map.values())):
            if Path(name).name != name:
                raise CaaBakeError(f"{index_path} names shard {name!r} outside the folder")
            shard = folder / name
            if not shard.is_file():
                raise CaaBakeError(
                    f"shard {name} named in {INDEX_FILE} is missing from {folder}; "
                    "the download is incomplete"
                )
            shards[name] = read_header(shard)
        for tensor, name in weight_map.items():
            if tensor not in shards[name].tensors:
                raise CaaBakeError(
                    f"{INDEX_FILE} puts {tensor} in {name}, but that shard does not hold it"
                )
        return Checkpoint(folder, True, index, shards, weight_map)
    single = folder / SINGLE_FILE
    if not single.is_file():
        raise CaaBakeError(
            f"{folder} has no safetensors weights ({SINGLE_FILE} or {INDEX_FILE}); "
            "caa-bake exports safetensors checkpoints only"
        )
    header = read_header(single)
    weight_map = dict.fromkeys(header.tensors, SINGLE_FILE)
    return Checkpoint(folder, False, {}, {SINGLE_FILE: header}, weight_map)
