"""A user's own contrast pairs as a first-class behavior, registered in the workspace.

``--behavior NAME --dataset FILE`` (any command that takes a behavior) registers FILE (a
JSON list or JSONL of ``question`` / ``answer_matching_behavior`` /
``answer_not_matching_behavior``) under NAME (default: the file's stem) in
``<datasets>/custom/<NAME>/``:

- ``generate.json``: the pairs vectors are extracted from (and finetuning trains on);
- ``test_ab.json``: the A/B test items ``eval`` and ``sweep`` score (absent when there is none);
- ``behavior.json``: the record: source file(s) and sha256, how the split was made.

The test split comes from ``--test-dataset TEST_FILE`` (then every pair of FILE is a
generate pair), or else from a seeded split of FILE: ``min(50, n // 5)`` items are held out
(the same 50 cap as the Anthropic behaviors), picked by a ``random.Random`` seeded with
``SPLIT_SEED`` and the file's sha256, kept in file order; the held-out indices are recorded.
A file of fewer than ``5 x MIN_TEST_ITEMS`` pairs is not split: all its pairs are generate
pairs and the behavior has no test split (extract, export and finetune work; eval and sweep
ask for ``--test-dataset``). A test split of fewer than ``MIN_TEST_ITEMS`` items is refused.

When no split is made the registered ``generate.json`` holds FILE's bytes unchanged, so its
sha256 (recorded with vectors and results) is the sha256 of the user's own file. Registering
the same name again with identical inputs changes nothing; with other inputs it replaces the
registration (vectors made from the old data are then re-extracted, as their dataset hash
no longer matches).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caa_bake.core import CaaBakeError, atomic_dir, file_sha256
from caa_bake.data.anthropic_raw import dump_items
from caa_bake.data.behaviors import check_custom_name, custom_folder
from caa_bake.data.datasets import ContrastPair, load_custom_pairs

__all__ = [
    "MIN_TEST_ITEMS",
    "SPLIT_SEED",
    "CustomBehavior",
    "custom_record",
    "prepare_custom",
]

SPLIT_SEED = "caa-bake/custom/v1"
#: the smallest test split accepted (fewer items make p_match too noisy to compare)
MIN_TEST_ITEMS = 10
_MAX_TEST = 50
_RECORD = "behavior.json"


def _item(pair: ContrastPair) -> dict[str, str]:
    return {
        "question": pair.question,
        "answer_matching_behavior": pair.matching,
        "answer_not_matching_behavior": pair.not_matching,
    }


@dataclass(frozen=True)
class CustomBehavior:
    """A validated custom behavior, not yet written (see :meth:`register`)."""

    name: str
    generate: list[ContrastPair]
    test: list[ContrastPair] | None
    generate_bytes: bytes
    test_bytes: bytes | None
    record: dict[str, Any]

    @property
    def folder(self) -> Path:
        return custom_folder(self.name)

    def register(self) -> Path:
        """Write ``<datasets>/custom/<name>/`` (atomically); returns the folder.

        Nothing is written when an identical registration is already there.
        """
        folder = self.folder
        if custom_record(self.name) == self.record and (folder / "generate.json").is_file():
            return folder
        with atomic_dir(folder, overwrite=True) as tmp:
            (tmp / "generate.json").write_bytes(self.generate_bytes)
            if self.test_bytes is not None:
                (tmp / "test_ab.json").write_bytes(self.test_bytes)
            text = json.dumps(self.record, indent=2, sort_keys=True) + "\n"
            (tmp / _RECORD).write_text(text, encoding="utf-8")
        return folder


def custom_record(name: str) -> dict[str, Any] | None:
    """The record of a registered behavior (None when ``name`` is not registered)."""
    path = custom_folder(name) / _RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _seeded_test_indices(n: int, source_sha: str) -> list[int]:
    size = min(_MAX_TEST, n // 5)
    digest = hashlib.sha256(f"{SPLIT_SEED}/{source_sha}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    keys = [rng.random() for _ in range(n)]
    return sorted(sorted(range(n), key=lambda i: (keys[i], i))[:size])


def prepare_custom(
    name: str | None, dataset: Path, test_dataset: Path | None = None
) -> CustomBehavior:
    """Validate FILE (and TEST_FILE) and the name, and work out the split; writes nothing.

    Raises ``CaaBakeError`` (one line) for a bad name (spaces, separators, a built-in
    behavior's name), a malformed file, or a test split under ``MIN_TEST_ITEMS`` items.
    """
    dataset = Path(dataset).expanduser()
    chosen = check_custom_name(name if name is not None else dataset.stem)
    pairs = load_custom_pairs(dataset)
    source_sha = file_sha256(dataset)
    record: dict[str, Any] = {
        "name": chosen,
        "kind": "custom",
        "source_file": str(dataset.resolve()),
        "source_sha256": source_sha,
        "source_pairs": len(pairs),
    }
    if test_dataset is not None:
        test_path = Path(test_dataset).expanduser()
        test = load_custom_pairs(test_path)
        if len(test) < MIN_TEST_ITEMS:
            raise CaaBakeError(
                f"test dataset {test_path} has {len(test)} item(s); a test split needs at "
                f"least {MIN_TEST_ITEMS}"
            )
        record["test_file"] = str(test_path.resolve())
        record["test_sha256"] = file_sha256(test_path)
        record["split"] = {"rule": "test file", "generate": len(pairs), "test": len(test)}
        return CustomBehavior(
            chosen, pairs, test, dataset.read_bytes(), test_path.read_bytes(), record
        )
    if len(pairs) < 5 * MIN_TEST_ITEMS:
        record["split"] = {
            "rule": "none",
            "generate": len(pairs),
            "test": 0,
            "reason": f"{dataset.name} has {len(pairs)} pairs, fewer than the "
            f"{5 * MIN_TEST_ITEMS} needed to hold out a fifth (at least {MIN_TEST_ITEMS})",
        }
        return CustomBehavior(chosen, pairs, None, dataset.read_bytes(), None, record)
    held = _seeded_test_indices(len(pairs), source_sha)
    held_set = set(held)
    generate = [p for i, p in enumerate(pairs) if i not in held_set]
    test = [pairs[i] for i in held]
    record["split"] = {
        "rule": f"seeded: min({_MAX_TEST}, n // 5) items held out, random.Random seeded with "
        "sha256(seed + '/' + source_sha256)",
        "seed": SPLIT_SEED,
        "generate": len(generate),
        "test": len(test),
        "test_indices": held,
    }
    return CustomBehavior(
        chosen,
        generate,
        test,
        dump_items([_item(p) for p in generate]),
        dump_items([_item(p) for p in test]),
        record,
    )
