"""Public faces that load on first use (PEP 562), shared by every subpackage's ``__init__``.

A subpackage lists its public names and the module each lives in; :func:`lazy_exports`
returns the module-level ``__getattr__`` and ``__dir__`` that import a name's module only when
the name is first used, so ``from caa_bake.bake import export_checkpoint`` costs what
``from caa_bake.bake.export import export_checkpoint`` costs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str,
    sources: Mapping[str, str],
    namespace: MutableMapping[str, Any],
    public: Sequence[str],
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``sources`` maps a name to its module.

    A loaded name is stored in ``namespace`` (the package's globals), so it is looked up once.
    """

    def getattr_(name: str) -> Any:
        module = sources.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(public)

    return getattr_, dir_
