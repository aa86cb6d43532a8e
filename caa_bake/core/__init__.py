"""What every part of caa-bake uses: atomic outputs, errors, hashing, paths, progress,
the multiplier list.

The public face of ``caa_bake.core``: other subpackages and the CLI import these names
from ``caa_bake.core``; its modules are internal to it. Names load on first use
(PEP 562), so importing the face costs no more than importing what is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from caa_bake.core.faces import lazy_exports

if TYPE_CHECKING:
    from caa_bake.core.atomic import (
        atomic_dir,
        atomic_file,
        default_mode,
        fsync_tree,
        owner_fds,
        scratch_dir,
    )
    from caa_bake.core.errors import CaaBakeError
    from caa_bake.core.faces import lazy_exports
    from caa_bake.core.hashing import file_sha256
    from caa_bake.core.multipliers import parse_multipliers
    from caa_bake.core.paths import (
        cache_dir,
        datasets_dir,
        exports_dir,
        results_dir,
        vectors_dir,
        workspace,
    )
    from caa_bake.core.progress import (
        is_quiet,
        progress,
        set_quiet,
    )
    from caa_bake.core.stale import (
        LOCK_SUFFIX,
        OLD_SUFFIX,
        OwnedTemp,
        SweepReport,
        claim_temp,
        sweep_stale,
    )

# a name that is also a submodule's name is bound now: once the submodule is imported,
# the package attribute would be the module and __getattr__ would never run
from caa_bake.core.progress import progress

__all__ = [
    "LOCK_SUFFIX",
    "OLD_SUFFIX",
    "CaaBakeError",
    "OwnedTemp",
    "SweepReport",
    "atomic_dir",
    "atomic_file",
    "cache_dir",
    "claim_temp",
    "datasets_dir",
    "default_mode",
    "exports_dir",
    "file_sha256",
    "fsync_tree",
    "is_quiet",
    "lazy_exports",
    "owner_fds",
    "parse_multipliers",
    "progress",
    "results_dir",
    "scratch_dir",
    "set_quiet",
    "sweep_stale",
    "vectors_dir",
    "workspace",
]

_SOURCES = {
    "CaaBakeError": "errors",
    "LOCK_SUFFIX": "stale",
    "OLD_SUFFIX": "stale",
    "OwnedTemp": "stale",
    "SweepReport": "stale",
    "atomic_dir": "atomic",
    "atomic_file": "atomic",
    "cache_dir": "paths",
    "claim_temp": "stale",
    "datasets_dir": "paths",
    "default_mode": "atomic",
    "exports_dir": "paths",
    "file_sha256": "hashing",
    "fsync_tree": "atomic",
    "is_quiet": "progress",
    "lazy_exports": "faces",
    "owner_fds": "atomic",
    "parse_multipliers": "multipliers",
    "results_dir": "paths",
    "scratch_dir": "atomic",
    "set_quiet": "progress",
    "sweep_stale": "stale",
    "vectors_dir": "paths",
    "workspace": "paths",
}

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES, globals(), __all__)
