"""Header parsing, tensor reads, byte patches, copies/links and shard writing."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from caa_bake.bake.safetensors_io import (
    INDEX_FILE,
    copy_file,
    default_mode,
    link_file,
    open_checkpoint,
    patch_tensor,
    read_header,
    read_tensor,
    tensor_bytes,
    write_shard,
)
from caa_bake.core.errors import CaaBakeError


@pytest.fixture()
def sample(tmp_path: Path) -> Path:
    gen = torch.Generator().manual_seed(1)
    path = tmp_path / "sample.safetensors"
    save_file(
        {
            "a.weight": torch.randn(3, 5, generator=gen),
            "b.bias": torch.randn(7, generator=gen).to(torch.float16),
            "c.bias": torch.randn(4, generator=gen).to(torch.bfloat16),
            "d.index": torch.arange(6, dtype=torch.int64),
        },
        str(path),
        metadata={"format": "pt"},
    )
    return path


def _with_header(path: Path, header: bytes, data: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def test_read_header_matches_the_file(sample: Path) -> None:
    header = read_header(sample)
    assert header.metadata == {"format": "pt"}
    assert set(header.tensors) == {"a.weight", "b.bias", "c.bias", "d.index"}
    assert header.tensors["a.weight"].shape == (3, 5)
    assert header.tensors["a.weight"].dtype == "F32"
    assert header.tensors["b.bias"].nbytes == 14
    assert header.tensors["c.bias"].torch_dtype == torch.bfloat16
    length = struct.unpack("<Q", sample.read_bytes()[:8])[0]
    assert header.data_start == 8 + length


def test_read_tensor_is_exact_in_every_dtype(sample: Path) -> None:
    header = read_header(sample)
    expected = load_file(str(sample))
    for name, tensor in expected.items():
        got = read_tensor(header, name)
        assert got.dtype == tensor.dtype
        assert torch.equal(got, tensor)


def test_patch_changes_only_that_tensor(sample: Path, tmp_path: Path) -> None:
    header = read_header(sample)
    target = tmp_path / "copy.safetensors"
    copy_file(sample, target)
    new = torch.tensor([1.5, -2.0, 3.25, 0.0, 7.0, -0.5, 2.0], dtype=torch.float16)
    patch_tensor(header, "b.bias", target, new)
    before, after = sample.read_bytes(), target.read_bytes()
    start = header.offset_of("b.bias")
    end = start + header.tensors["b.bias"].nbytes
    assert before[:start] == after[:start]
    assert before[end:] == after[end:]
    assert after[start:end] == tensor_bytes(new)
    reloaded = load_file(str(target))
    assert torch.equal(reloaded["b.bias"], new)
    assert torch.equal(reloaded["a.weight"], load_file(str(sample))["a.weight"])


def test_patch_refuses_a_wrong_shape_or_dtype(sample: Path, tmp_path: Path) -> None:
    header = read_header(sample)
    target = tmp_path / "copy.safetensors"
    copy_file(sample, target)
    with pytest.raises(ValueError, match=r"b\.bias"):
        patch_tensor(header, "b.bias", target, torch.zeros(7))
    with pytest.raises(ValueError, match=r"b\.bias"):
        patch_tensor(header, "b.bias", target, torch.zeros(6, dtype=torch.float16))
    assert target.read_bytes() == sample.read_bytes()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"\x01\x02", "shorter than 8 bytes"),
        (struct.pack("<Q", 10**6) + b"{}", "exceeds the file size"),
        (struct.pack("<Q", 4) + b"nope", "not JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    ],
)
def test_corrupt_headers_are_one_clear_error(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CaaBakeError, match=f"corrupt safetensors header in .*{why}"):
        read_header(path)


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ({"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}, "unknown dtype"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, "claims bytes 0-4"),
        ({"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "of a 8-byte data section"),
        ({"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}, "invalid shape"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [0]}, "invalid data_offsets"),
    ],
)
def test_inconsistent_entries_are_corrupt(
    tmp_path: Path, entry: dict[str, object], why: str
) -> None:
    path = _with_header(tmp_path / "bad.safetensors", json.dumps({"t": entry}).encode(), b"\0" * 8)
    with pytest.raises(CaaBakeError, match=why):
        read_header(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CaaBakeError, match="weights file not found"):
        read_header(tmp_path / "absent.safetensors")


def test_copy_and_link_give_identical_bytes(sample: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    copy_file(sample, tmp_path / "copied", on_bytes=seen.append)
    assert (tmp_path / "copied").read_bytes() == sample.read_bytes()
    assert sum(seen) == sample.stat().st_size
    assert os.stat(tmp_path / "copied").st_ino != sample.stat().st_ino
    method = link_file(sample, tmp_path / "linked")
    assert method in ("reflink", "hardlink")
    assert (tmp_path / "linked").read_bytes() == sample.read_bytes()
    if method == "hardlink":
        assert os.stat(tmp_path / "linked").st_ino == sample.stat().st_ino
    with pytest.raises(FileExistsError):
        copy_file(sample, tmp_path / "copied")


def test_write_shard_is_deterministic_with_normal_permissions(tmp_path: Path) -> None:
    tensors = {
        "z.bias": torch.arange(4, dtype=torch.float32),
        "a.bias": torch.ones(3, dtype=torch.bfloat16),
    }
    write_shard(tmp_path / "one.safetensors", tensors)
    write_shard(tmp_path / "two.safetensors", dict(reversed(tensors.items())))
    assert (tmp_path / "one.safetensors").read_bytes() == (
        tmp_path / "two.safetensors"
    ).read_bytes()
    assert (tmp_path / "one.safetensors").stat().st_mode & 0o777 == default_mode()
    loaded = load_file(str(tmp_path / "one.safetensors"))
    assert torch.equal(loaded["a.bias"], tensors["a.bias"])


def _indexed(tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_file({"x": torch.zeros(2), "y": torch.ones(3)}, str(folder / "part-1.safetensors"))
    save_file({"z": torch.ones(1)}, str(folder / "part-2.safetensors"))
    index = {
        "metadata": {"total_size": 24},
        "weight_map": {
            "x": "part-1.safetensors",
            "y": "part-1.safetensors",
            "z": "part-2.safetensors",
        },
    }
    (folder / INDEX_FILE).write_text(json.dumps(index))
    return folder


def test_open_checkpoint_indexed_and_single(tmp_path: Path, sample: Path) -> None:
    ckpt = open_checkpoint(_indexed(tmp_path))
    assert ckpt.indexed
    assert dict(ckpt.weight_map) == {
        "x": "part-1.safetensors",
        "y": "part-1.safetensors",
        "z": "part-2.safetensors",
    }
    assert ckpt.info("y").shape == (3,)
    single = tmp_path / "single"
    single.mkdir()
    copy_file(sample, single / "model.safetensors")
    ckpt = open_checkpoint(single)
    assert not ckpt.indexed
    assert set(ckpt.weight_map) == {"a.weight", "b.bias", "c.bias", "d.index"}


def test_open_checkpoint_refuses_incomplete_folders(tmp_path: Path) -> None:
    folder = _indexed(tmp_path)
    (folder / "part-2.safetensors").unlink()
    with pytest.raises(CaaBakeError, match=r"shard part-2\.safetensors named in .* is missing"):
        open_checkpoint(folder)
    save_file({"other": torch.ones(1)}, str(folder / "part-2.safetensors"))
    with pytest.raises(CaaBakeError, match=r"puts z in part-2\.safetensors"):
        open_checkpoint(folder)
    with pytest.raises(CaaBakeError, match="has no safetensors weights"):
        open_checkpoint(tmp_path / "empty")
