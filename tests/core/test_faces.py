"""Lazy public faces: a name's module is imported on first use, then the name is cached."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from caa_bake.core.faces import lazy_exports

ROOT = Path(__file__).resolve().parents[2]


def test_a_name_loads_its_module_once_and_is_cached() -> None:
    namespace: dict[str, object] = {}
    getattr_, dir_ = lazy_exports(
        "caa_bake.core", {"file_sha256": "hashing"}, namespace, ["x", "a"]
    )
    from caa_bake.core.hashing import file_sha256

    assert getattr_("file_sha256") is file_sha256
    assert namespace == {"file_sha256": file_sha256}
    assert dir_() == ["a", "x"]
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        getattr_("nope")


def test_importing_a_face_imports_no_module_until_a_name_is_used() -> None:
    code = (
        "import sys, caa_bake.bake as b\n"
        "before = 'caa_bake.bake.export' in sys.modules\n"
        "f = b.export_checkpoint\n"
        "print(before, 'caa_bake.bake.export' in sys.modules, f.__module__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "True", "caa_bake.bake.export"]
