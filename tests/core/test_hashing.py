"""``file_sha256``: streamed sha256 equals hashlib over the whole file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from caa_bake.core.hashing import file_sha256

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert file_sha256(path) == EMPTY_SHA256 == hashlib.sha256(b"").hexdigest()
    assert file_sha256(path, chunk=1) == EMPTY_SHA256


def test_known_value(tmp_path: Path) -> None:
    path = tmp_path / "abc"
    path.write_bytes(b"abc")
    assert file_sha256(path) == ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000, 1024, 4096])
def test_small_chunks_match_hashlib(tmp_path: Path, chunk: int) -> None:
    data = os.urandom(1000) + bytes(range(256)) * 4  # 2024 bytes
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    assert file_sha256(path, chunk=chunk) == hashlib.sha256(data).hexdigest()


def test_multi_chunk_with_the_default_chunk_size(tmp_path: Path) -> None:
    chunk = 1 << 22
    # two full default chunks plus a partial one; also an exact multiple of the chunk
    data = os.urandom(chunk * 2 + 12345)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    exact = tmp_path / "exact.bin"
    exact.write_bytes(data[: chunk * 2])
    assert file_sha256(exact) == hashlib.sha256(data[: chunk * 2]).hexdigest()
    assert file_sha256(exact) != file_sha256(path)


def test_accepts_a_string_path(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("hello\n")
    assert file_sha256(str(path)) == hashlib.sha256(b"hello\n").hexdigest()  # type: ignore[arg-type]


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "missing")
