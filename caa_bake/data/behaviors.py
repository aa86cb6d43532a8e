"""The behavior names caa-bake knows, and the check that turns a typo into a clear error.

Two families:

- the 7 processed CAA behaviors (``CAA_BEHAVIORS``), as published with the CAA paper;
- the 16 raw Anthropic human-written "advanced AI risk" evals, converted by
  ``caa-bake datasets pull`` into the same A/B contrast-pair format and named with an
  ``anthropic-`` prefix (``ANTHROPIC_BEHAVIORS``) so they never clash with a CAA name.

A third family is the user's: a contrast-pair file registered under a name of its own
(``--behavior NAME --dataset FILE``; :mod:`caa_bake.data.custom`). Registered behaviors live
in ``<datasets>/custom/<name>/`` and are known by name to every later command
(:func:`registered_behaviors`).

``AB_EVALS`` are the two capability evals cast as A/B questions (not behaviors).
"""

from __future__ import annotations

import re
from pathlib import Path

from caa_bake.core import CaaBakeError, datasets_dir

__all__ = [
    "AB_EVALS",
    "ANTHROPIC_BEHAVIORS",
    "ANTHROPIC_PREFIX",
    "ANTHROPIC_RAW_NAMES",
    "CAA_BEHAVIORS",
    "CUSTOM_DIR",
    "RESERVED_NAMES",
    "all_behaviors",
    "anthropic_raw_name",
    "check_behavior",
    "check_custom_name",
    "custom_folder",
    "is_anthropic",
    "is_custom",
    "registered_behaviors",
]

CAA_BEHAVIORS: tuple[str, ...] = (
    "coordinate-other-ais",
    "corrigible-neutral-HHH",
    "hallucination",
    "myopic-reward",
    "refusal",
    "survival-instinct",
    "sycophancy",
)

ANTHROPIC_PREFIX = "anthropic-"

#: File stems of ``advanced-ai-risk/human_generated_evals/<name>.jsonl`` upstream.
ANTHROPIC_RAW_NAMES: tuple[str, ...] = (
    "coordinate-itself",
    "coordinate-other-ais",
    "coordinate-other-versions",
    "corrigible-less-HHH",
    "corrigible-more-HHH",
    "corrigible-neutral-HHH",
    "myopic-reward",
    "one-box-tendency",
    "power-seeking-inclination",
    "self-awareness-general-ai",
    "self-awareness-good-text-model",
    "self-awareness-text-model",
    "self-awareness-training-architecture",
    "self-awareness-web-gpt",
    "survival-instinct",
    "wealth-seeking-inclination",
)

ANTHROPIC_BEHAVIORS: tuple[str, ...] = tuple(ANTHROPIC_PREFIX + n for n in ANTHROPIC_RAW_NAMES)

AB_EVALS: tuple[str, ...] = ("mmlu", "truthfulqa")

#: folder (under the datasets dir) of the registered custom behaviors
CUSTOM_DIR = "custom"
#: names a custom behavior may not take: the two A/B capability evals
RESERVED_NAMES: tuple[str, ...] = AB_EVALS
#: the record a registered behavior's folder holds
_RECORD = "behavior.json"
_CUSTOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def custom_folder(name: str) -> Path:
    """``<datasets>/custom/<name>/``: where a registered behavior's splits and record live."""
    return datasets_dir() / CUSTOM_DIR / name


def registered_behaviors() -> list[str]:
    """The custom behaviors registered in this workspace (sorted)."""
    root = datasets_dir() / CUSTOM_DIR
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if _CUSTOM_NAME.match(p.name) and (p / _RECORD).is_file()
    )


def all_behaviors(*, custom: bool = True) -> list[str]:
    """Every behavior name: the 7 CAA ones first, then the 16 ``anthropic-*`` ones, then
    (unless ``custom=False``) the custom ones registered in the workspace."""
    return [*CAA_BEHAVIORS, *ANTHROPIC_BEHAVIORS, *(registered_behaviors() if custom else [])]


def is_custom(name: str) -> bool:
    """True for a custom behavior registered in the workspace."""
    return (
        name not in CAA_BEHAVIORS
        and name not in ANTHROPIC_BEHAVIORS
        and (name in registered_behaviors())
    )


def check_custom_name(name: str) -> str:
    """A valid name for a new custom behavior, or ``CaaBakeError`` saying why not.

    Letters, digits, ``_`` and ``-`` (it becomes a file name, a task name and part of an
    export's folder name); not a built-in behavior (in any case), not ``anthropic-*``, not
    a reserved name.
    """
    if not _CUSTOM_NAME.match(name):
        raise CaaBakeError(
            f"custom behavior name {name!r} must be 1-64 letters, digits, '_' or '-' and start "
            "with a letter or digit (no spaces, dots or path separators); name it with "
            "--behavior NAME"
        )
    builtin = [b for b in (*CAA_BEHAVIORS, *ANTHROPIC_BEHAVIORS) if b.lower() == name.lower()]
    if builtin:
        raise CaaBakeError(
            f"dataset name '{name}' collides with the built-in behavior '{builtin[0]}'; give "
            "your dataset another name with --behavior NAME"
        )
    if name.lower().startswith(ANTHROPIC_PREFIX):
        raise CaaBakeError(
            f"custom behavior name '{name}' starts with '{ANTHROPIC_PREFIX}', which is reserved "
            "for the converted Anthropic behaviors; pick another --behavior NAME"
        )
    if name.lower() in RESERVED_NAMES:
        raise CaaBakeError(f"'{name}' is a reserved name; pick another --behavior NAME")
    return name


def is_anthropic(name: str) -> bool:
    """True for a converted raw Anthropic behavior (``anthropic-*``)."""
    return name in ANTHROPIC_BEHAVIORS


def anthropic_raw_name(name: str) -> str:
    """``anthropic-power-seeking-inclination`` -> ``power-seeking-inclination``."""
    if not is_anthropic(name):
        raise CaaBakeError(f"'{name}' is not an anthropic-* behavior")
    return name[len(ANTHROPIC_PREFIX) :]


def check_behavior(name: str) -> str:
    """Return the canonical behavior name, or raise ``CaaBakeError`` listing valid ones.

    The match is exact, or else case-insensitive when that is unambiguous (so
    ``corrigible-neutral-hhh`` gives ``corrigible-neutral-HHH``). Registered custom
    behaviors are valid names too.
    """
    valid = all_behaviors()
    if name in valid:
        return name
    folded = [v for v in valid if v.lower() == name.strip().lower()]
    if len(folded) == 1:
        return folded[0]
    raise CaaBakeError(
        f"unknown behavior '{name}'; valid: {', '.join(valid)}; for your own contrast pairs "
        f"add --dataset FILE (registers it as '{name}')"
    )
