"""Load pulled datasets: contrast pairs per behavior, custom pair files, A/B capability evals.

Layout under the datasets dir (``caa_bake.core.paths.datasets_dir()``), as ``pull`` writes it:

- ``caa/generate/<behavior>/generate_dataset.json`` and ``caa/test/<behavior>/test_dataset_ab.json``
  (plus ``test_dataset_open_ended.json``) for the 7 CAA behaviors;
- ``anthropic/<name>/generate.json`` and ``anthropic/<name>/test_ab.json`` for
  ``anthropic-<name>``, converted from the raw files under ``anthropic-model-written-evals/``;
- ``caa/test/mmlu/mmlu.json`` and ``caa/test/truthfulqa/truthful_qa.json``;
- ``custom/<name>/generate.json`` and (when it has one) ``custom/<name>/test_ab.json`` for a
  registered custom behavior (:mod:`caa_bake.data.custom`).

Every loader validates every item and raises ``CaaBakeError`` naming the file, the item
index (0-based) and what is wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caa_bake.core import CaaBakeError, datasets_dir, file_sha256
from caa_bake.data.behaviors import (
    AB_EVALS,
    CUSTOM_DIR,
    all_behaviors,
    anthropic_raw_name,
    check_behavior,
    custom_folder,
    is_anthropic,
    is_custom,
)

__all__ = [
    "SPLITS",
    "ABItem",
    "ContrastPair",
    "DatasetStatus",
    "ab_eval_path",
    "anthropic_converted_paths",
    "anthropic_raw_path",
    "dataset_path",
    "file_sha256",
    "inventory",
    "load_ab_eval",
    "load_custom_pairs",
    "load_open_ended",
    "load_pairs",
]

#: Splits of ``load_pairs``. ``dataset_path`` also knows ``"open_ended"`` (CAA behaviors).
SPLITS: tuple[str, ...] = ("generate", "test")

_ANSWER = re.compile(r"\(([A-Z])\)")
_PAIR_KEYS = ("question", "answer_matching_behavior", "answer_not_matching_behavior")
_AB_FILES = {
    "mmlu": "caa/test/mmlu/mmlu.json",
    "truthfulqa": "caa/test/truthfulqa/truthful_qa.json",
}
_RAW_ANTHROPIC_DIR = "anthropic-model-written-evals/advanced-ai-risk/human_generated_evals"
_Fail = Callable[[str], CaaBakeError]
_PULL_HINT = "run `caa-bake datasets pull` (or `--source DIR` for a local mirror)"


@dataclass(frozen=True)
class ContrastPair:
    """One A/B question; ``matching``/``not_matching`` are letters in the form ``"(A)"``."""

    question: str
    matching: str
    not_matching: str


@dataclass(frozen=True)
class ABItem:
    """One MMLU / TruthfulQA item cast as an A/B question (``correct`` like ``"(B)"``)."""

    question: str
    correct: str
    incorrect: str
    category: str


# --- layout -------------------------------------------------------------------------------


def anthropic_raw_path(raw_name: str) -> str:
    """Datasets-relative path of a raw Anthropic eval (``raw_name`` without the prefix)."""
    return f"{_RAW_ANTHROPIC_DIR}/{raw_name}.jsonl"


def anthropic_converted_paths(raw_name: str) -> tuple[str, str]:
    """Datasets-relative paths of a converted Anthropic behavior's generate and test files."""
    return f"anthropic/{raw_name}/generate.json", f"anthropic/{raw_name}/test_ab.json"


def _relative_path(behavior: str, split: str) -> str:
    name = check_behavior(behavior)
    if split not in (*SPLITS, "open_ended"):
        raise CaaBakeError(f"unknown split '{split}'; valid: generate, test, open_ended")
    if is_custom(name):
        if split == "open_ended":
            raise CaaBakeError(f"'{name}' has no open-ended split (only the 7 CAA behaviors do)")
        return f"{CUSTOM_DIR}/{name}/" + (
            "generate.json" if split == "generate" else "test_ab.json"
        )
    if is_anthropic(name):
        if split == "open_ended":
            raise CaaBakeError(f"'{name}' has no open-ended split (only the 7 CAA behaviors do)")
        generate, test = anthropic_converted_paths(anthropic_raw_name(name))
        return generate if split == "generate" else test
    return {
        "generate": f"caa/generate/{name}/generate_dataset.json",
        "test": f"caa/test/{name}/test_dataset_ab.json",
        "open_ended": f"caa/test/{name}/test_dataset_open_ended.json",
    }[split]


def dataset_path(behavior: str, split: str = "generate") -> Path:
    """Where ``behavior``'s ``split`` ("generate", "test" or "open_ended") lives."""
    return datasets_dir() / _relative_path(behavior, split)


def ab_eval_path(name: str) -> Path:
    """Where the A/B eval ``name`` ("mmlu" or "truthfulqa") lives."""
    if name not in _AB_FILES:
        raise CaaBakeError(f"unknown A/B eval '{name}'; valid: {', '.join(AB_EVALS)}")
    return datasets_dir() / _AB_FILES[name]


# --- reading and validation ---------------------------------------------------------------


def _read_text(path: Path, what: str, pulled: bool) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if pulled:
            raise CaaBakeError(
                f"{what} not found under {datasets_dir()} (no {path.name}); {_PULL_HINT}"
            ) from None
        raise CaaBakeError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CaaBakeError(f"cannot read {path}: {exc}") from exc


def _parse_json_list(text: str, path: Path) -> list[tuple[str, Any]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CaaBakeError(f"malformed dataset {path}: not valid JSON ({exc})") from None
    if isinstance(data, dict):
        raise CaaBakeError(
            f"malformed dataset {path}: expected a JSON list of items, got an object"
        )
    if not isinstance(data, list):
        raise CaaBakeError(f"malformed dataset {path}: expected a JSON list of items")
    return [(f"item {i}", item) for i, item in enumerate(data)]


def _parse_jsonl(text: str, path: Path) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        label = f"item {len(items)} (line {lineno})"
        try:
            items.append((label, json.loads(line)))
        except ValueError as exc:
            raise CaaBakeError(
                f"malformed dataset {path}: {label}: not valid JSON ({exc})"
            ) from None
    return items


def _parse_items(text: str, path: Path) -> list[tuple[str, Any]]:
    """A JSON list, or JSONL (one object a line). Raises on bad syntax or an empty file."""
    stripped = text.lstrip()
    if not stripped:
        raise CaaBakeError(f"empty dataset {path}: the file has no items")
    if stripped.startswith("{"):
        try:
            whole = json.loads(text)
        except ValueError:
            whole = None
        if isinstance(whole, dict) and len(text.strip().splitlines()) > 1:
            raise CaaBakeError(
                f"malformed dataset {path}: expected a JSON list of items (or JSONL, one "
                "object a line), got a single object"
            )
        items = _parse_jsonl(text, path)
    else:
        items = _parse_json_list(text, path)
    if not items:
        raise CaaBakeError(f"empty dataset {path}: the file has no items")
    return items


def _answer(item: dict[str, Any], key: str, fail: _Fail) -> str:
    value = item[key]
    match = _ANSWER.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise fail(f"'{key}' is {value!r}, expected a letter like '(A)'")
    return match.group(0)


def _check_keys(item: Any, keys: tuple[str, ...], fail: _Fail) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise fail(f"expected an object with keys {', '.join(keys)}, got {type(item).__name__}")
    for key in keys:
        if key not in item:
            raise fail(f"missing key '{key}'")
    return item


def _question(item: dict[str, Any], key: str, fail: _Fail) -> str:
    value = item[key]
    if not isinstance(value, str) or not value.strip():
        raise fail(f"'{key}' must be a non-empty string")
    return value


def _to_pair(item: Any, label: str, path: Path) -> ContrastPair:
    def fail(what: str) -> CaaBakeError:
        return CaaBakeError(f"malformed dataset {path}: {label}: {what}")

    obj = _check_keys(item, _PAIR_KEYS, fail)
    question = _question(obj, "question", fail)
    matching = _answer(obj, "answer_matching_behavior", fail)
    not_matching = _answer(obj, "answer_not_matching_behavior", fail)
    if matching == not_matching:
        raise fail(f"answer_matching_behavior and answer_not_matching_behavior are both {matching}")
    for letter in (matching, not_matching):
        if letter not in question:
            raise fail(f"answer {letter} is not one of the question's choices")
    return ContrastPair(question=question, matching=matching, not_matching=not_matching)


def _pairs_from(text: str, path: Path) -> list[ContrastPair]:
    return [_to_pair(item, label, path) for label, item in _parse_items(text, path)]


# --- public loaders -----------------------------------------------------------------------


def load_pairs(behavior: str, split: str = "generate") -> list[ContrastPair]:
    """Contrast pairs of a pulled behavior; ``split`` is "generate" or "test".

    Raises ``CaaBakeError`` for an unknown behavior or split, datasets not pulled yet, or a
    malformed file.
    """
    if split not in SPLITS:
        raise CaaBakeError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")
    name = check_behavior(behavior)
    path = dataset_path(name, split)
    if split == "test" and is_custom(name) and not path.is_file():
        raise CaaBakeError(_no_test_split(name))
    return _pairs_from(_read_text(path, f"dataset '{name}' ({split})", pulled=True), path)


def _no_test_split(name: str) -> str:
    reason = ""
    try:
        record = json.loads((custom_folder(name) / "behavior.json").read_text(encoding="utf-8"))
        reason = f" ({record['split']['reason']})"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return (
        f"custom behavior '{name}' has no test split{reason}; register it again with "
        f"--behavior {name} --dataset FILE --test-dataset TEST_FILE"
    )


def load_custom_pairs(path: Path) -> list[ContrastPair]:
    """Contrast pairs from a user file: a JSON list or JSONL of objects with ``question``,
    ``answer_matching_behavior`` and ``answer_not_matching_behavior`` (answers like "(A)",
    surrounding spaces allowed; extra keys ignored)."""
    path = Path(path).expanduser()
    return _pairs_from(_read_text(path, "custom dataset", pulled=False), path)


def load_open_ended(behavior: str) -> list[str]:
    """The open-ended test questions of a CAA behavior (no choices)."""
    name = check_behavior(behavior)
    path = dataset_path(name, "open_ended")
    text = _read_text(path, f"dataset '{name}' (open_ended)", pulled=True)
    questions = []
    for label, item in _parse_items(text, path):

        def fail(what: str, label: str = label) -> CaaBakeError:
            return CaaBakeError(f"malformed dataset {path}: {label}: {what}")

        questions.append(_question(_check_keys(item, ("question",), fail), "question", fail))
    return questions


def load_ab_eval(name: str) -> list[ABItem]:
    """MMLU ("mmlu", 570 items) or TruthfulQA ("truthfulqa", 817 items) as A/B items."""
    path = ab_eval_path(name)
    text = _read_text(path, f"A/B eval '{name}'", pulled=True)
    items = []
    for label, item in _parse_items(text, path):

        def fail(what: str, label: str = label) -> CaaBakeError:
            return CaaBakeError(f"malformed dataset {path}: {label}: {what}")

        obj = _check_keys(item, ("prompt", "correct", "incorrect", "category"), fail)
        prompt = _question(obj, "prompt", fail)
        correct = _answer(obj, "correct", fail)
        incorrect = _answer(obj, "incorrect", fail)
        if correct == incorrect:
            raise fail(f"correct and incorrect are both {correct}")
        for letter in (correct, incorrect):
            if letter not in prompt:
                raise fail(f"answer {letter} is not one of the prompt's choices")
        if not isinstance(obj["category"], str):
            raise fail("'category' must be a string")
        items.append(ABItem(prompt, correct, incorrect, obj["category"]))
    return items


# --- inventory (for `caa-bake datasets list`) -------------------------------------------------


@dataclass(frozen=True)
class DatasetStatus:
    """What is on disk for one behavior or A/B eval.

    ``state``: "present" (all files load), "missing" (none), "partial" (some) or "invalid"
    (a file fails validation; ``problem`` says why). Counts are None when unknown.
    """

    name: str
    kind: str
    generate: int | None
    test: int | None
    state: str
    files: tuple[Path, ...]
    problem: str | None = None


def _status(name: str, kind: str, files: dict[str, Path]) -> DatasetStatus:
    paths = tuple(files.values())
    present = [p.is_file() for p in paths]
    counts: dict[str, int | None] = {"generate": None, "test": None}
    if not any(present):
        return DatasetStatus(name, kind, None, None, "missing", paths)
    try:
        for split, path in files.items():
            if path.is_file():
                loaded = load_ab_eval(name) if kind == "ab-eval" else load_pairs(name, split)
                counts[split] = len(loaded)
    except CaaBakeError as exc:
        return DatasetStatus(
            name, kind, counts["generate"], counts["test"], "invalid", paths, str(exc)
        )
    state = "present" if all(present) else "partial"
    return DatasetStatus(name, kind, counts["generate"], counts["test"], state, paths)


def inventory() -> list[DatasetStatus]:
    """Status of every behavior (CAA, anthropic-*, then registered custom ones) and both A/B
    evals. A custom behavior without a test split lists only its generate file."""
    rows = []
    for name in all_behaviors():
        files = {split: dataset_path(name, split) for split in SPLITS}
        if is_custom(name):
            kind = "custom"
            files = {split: path for split, path in files.items() if path.is_file()}
        else:
            kind = "anthropic" if is_anthropic(name) else "caa"
        rows.append(_status(name, kind, files))
    for name in AB_EVALS:
        rows.append(_status(name, "ab-eval", {"test": ab_eval_path(name)}))
    return rows
