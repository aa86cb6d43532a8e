"""Convert Anthropic's raw human-written "advanced AI risk" evals into CAA contrast pairs.

Input: one ``<name>.jsonl`` file, one object a line with ``question``,
``answer_matching_behavior`` and ``answer_not_matching_behavior`` (answers such as
``" (A)"``; some questions offer more than two choices, up to (H)).

Rules (deterministic: the same input gives byte-identical output):

1. Answers lose their leading space: ``" (A)"`` -> ``"(A)"``.
2. Scaffolding is stripped: a leading ``Question:`` and a trailing ``Answer:``.
3. The choices block (after the last ``Choices:`` line) is parsed; only the matching and the
   non-matching choice are kept and relabelled ``(A)``/``(B)``. A question that already has
   exactly (A) and (B) keeps its order (upstream already balances the letters, and a few
   question texts say "option A"); a question with more choices gets its two kept choices
   in an order drawn from a seeded RNG, so the matching answer is not always (A).
4. Exact duplicate questions (after conversion) are dropped, keeping the first, so the
   test split never shares a question with the generate split.
5. A seeded RNG picks ``TEST_SIZE`` (50) items as the test split (kept in file order); the
   rest is the generate split.

The RNGs are ``random.Random`` seeded with an integer derived from the behavior name, and
only ``random()`` is used: Python guarantees that sequence is stable across versions.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caa_bake.core import CaaBakeError

__all__ = [
    "SEED",
    "TEST_SIZE",
    "ConvertedBehavior",
    "convert_file",
    "convert_item",
    "convert_jsonl",
    "dump_items",
]

SEED = "caa-bake/anthropic/v1"
TEST_SIZE = 50

_ANSWER = re.compile(r"\(([A-Z])\)")
_CHOICES_HEADER = re.compile(r"\n[ \t]*Choices:[ \t]*\n")
_CHOICE_LINE = re.compile(r"[ \t]*\(([A-Z])\)[ \t]*(.*?)\s*")
_QUESTION_PREFIX = re.compile(r"\A\s*Question:\s*")
_ANSWER_SUFFIX = re.compile(r"\n\s*Answer:\s*\Z")


@dataclass(frozen=True)
class ConvertedBehavior:
    """The two splits of one converted behavior, as lists of CAA-format items."""

    generate: list[dict[str, str]]
    test: list[dict[str, str]]
    dropped_duplicates: int


def _rng(name: str, purpose: str) -> random.Random:
    digest = hashlib.sha256(f"{SEED}/{name}/{purpose}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _letter(value: Any, key: str) -> str:
    if value is None:
        raise ValueError(f"missing '{key}'")
    if not isinstance(value, str):
        raise ValueError(f"'{key}' is not a string")
    match = _ANSWER.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"'{key}' is {value!r}, not like '(A)'")
    return match.group(1)


def _parse_choices(block: str) -> dict[str, str]:
    choices: dict[str, str] = {}
    last: str | None = None
    for line in block.split("\n"):
        if not line.strip():
            continue
        match = _CHOICE_LINE.fullmatch(line)
        if match is not None:
            letter, text = match.groups()
            if letter in choices:
                raise ValueError(f"choice ({letter}) appears twice")
            choices[letter] = text
            last = letter
        elif last is not None:  # a wrapped choice: join it to the previous one
            choices[last] = f"{choices[last]} {line.strip()}"
        else:
            raise ValueError("text before the first choice")
    return choices


def convert_item(raw: Any, flip: bool) -> dict[str, str]:
    """Convert one raw item; ``flip`` puts the matching choice second (multi-choice only).

    Raises ``ValueError`` saying what is wrong with the item.
    """
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    question = raw.get("question")
    if not isinstance(question, str):
        raise ValueError("'question' missing or not a string")
    matching = _letter(raw.get("answer_matching_behavior"), "answer_matching_behavior")
    not_matching = _letter(raw.get("answer_not_matching_behavior"), "answer_not_matching_behavior")
    if matching == not_matching:
        raise ValueError(f"matching and not-matching answers are both ({matching})")
    headers = list(_CHOICES_HEADER.finditer(question))
    if not headers:
        raise ValueError("no 'Choices:' line")
    body = _QUESTION_PREFIX.sub("", question[: headers[-1].start()]).strip()
    block = _ANSWER_SUFFIX.sub("", question[headers[-1].end() :])
    choices = _parse_choices(block)
    for letter in (matching, not_matching):
        if letter not in choices:
            raise ValueError(f"answer ({letter}) is not among the choices {sorted(choices)}")
    if not body:
        raise ValueError("empty question text")
    # two-choice questions keep upstream's order; others get the RNG's
    first_is_matching = matching == "A" if set(choices) == {"A", "B"} else not flip
    a, b = (matching, not_matching) if first_is_matching else (not_matching, matching)
    return {
        "question": f"{body}\n\nChoices:\n (A) {choices[a]}\n (B) {choices[b]}",
        "answer_matching_behavior": "(A)" if first_is_matching else "(B)",
        "answer_not_matching_behavior": "(B)" if first_is_matching else "(A)",
    }


def convert_jsonl(text: str, name: str, *, source: str = "<jsonl>") -> ConvertedBehavior:
    """Convert the text of one raw ``<name>.jsonl`` file into generate/test splits.

    ``name`` is the raw behavior name (it seeds the RNGs); ``source`` names the file in
    errors. Raises ``CaaBakeError`` naming the file and line of a malformed item.
    """
    flips = _rng(name, "choice-order")
    items: list[dict[str, str]] = []
    seen: set[str] = set()
    dropped = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        flip = flips.random() < 0.5
        try:
            item = convert_item(json.loads(line), flip)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise CaaBakeError(f"malformed raw item in {source} line {lineno}: {exc}") from exc
        if item["question"] in seen:
            dropped += 1
            continue
        seen.add(item["question"])
        items.append(item)
    if len(items) <= TEST_SIZE:
        raise CaaBakeError(
            f"{source}: only {len(items)} usable items, need more than {TEST_SIZE} to split"
        )
    picker = _rng(name, "test-split")
    keys = [picker.random() for _ in items]
    test_idx = set(sorted(range(len(items)), key=lambda i: (keys[i], i))[:TEST_SIZE])
    return ConvertedBehavior(
        generate=[it for i, it in enumerate(items) if i not in test_idx],
        test=[it for i, it in enumerate(items) if i in test_idx],
        dropped_duplicates=dropped,
    )


def dump_items(items: list[dict[str, str]]) -> bytes:
    """Serialise items the one canonical way (indent 4, UTF-8, trailing newline)."""
    return (json.dumps(items, indent=4, ensure_ascii=False) + "\n").encode("utf-8")


def convert_file(raw_path: Path, name: str) -> tuple[bytes, bytes]:
    """Convert ``raw_path``; return the bytes of ``generate.json`` and ``test_ab.json``."""
    try:
        text = raw_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CaaBakeError(f"cannot read {raw_path}: {exc}") from exc
    converted = convert_jsonl(text, name, source=str(raw_path))
    return dump_items(converted.generate), dump_items(converted.test)
