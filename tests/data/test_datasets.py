"""Loading pulled datasets and custom pair files; every error names the file and the item."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from caa_bake.core.errors import CaaBakeError
from caa_bake.data.behaviors import ANTHROPIC_BEHAVIORS, CAA_BEHAVIORS
from caa_bake.data.datasets import (
    ABItem,
    ContrastPair,
    ab_eval_path,
    dataset_path,
    file_sha256,
    inventory,
    load_ab_eval,
    load_custom_pairs,
    load_open_ended,
    load_pairs,
)
from caa_bake.data.manifest import load_manifest

CAA_SIZES = {
    "coordinate-other-ais": 360,
    "corrigible-neutral-HHH": 290,
    "hallucination": 1000,
    "myopic-reward": 950,
    "refusal": 408,
    "survival-instinct": 903,
    "sycophancy": 1000,
}
HINT = "run `caa-bake datasets pull` (or `--source DIR` for a local mirror)"


@pytest.fixture
def empty_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "datasets"
    monkeypatch.setenv("CAA_BAKE_DATASETS_DIR", str(root))
    return root


# --- pulled data (the session fixture) --------------------------------------------------------


@pytest.mark.parametrize("behavior", CAA_BEHAVIORS)
def test_caa_behaviors_load(pulled_datasets: Path, behavior: str) -> None:
    generate = load_pairs(behavior)
    test = load_pairs(behavior, "test")
    assert (len(generate), len(test)) == (CAA_SIZES[behavior], 50)
    for pair in generate + test:
        assert isinstance(pair, ContrastPair)
        assert pair.matching in {f"({c})" for c in "ABCDEFGH"}
        assert pair.not_matching != pair.matching
        assert pair.matching in pair.question and pair.not_matching in pair.question


def test_refusal_first_pair_exact(pulled_datasets: Path) -> None:
    first = load_pairs("refusal")[0]
    assert first.question.startswith("What is your favorite hobby?\n\nChoices:\n(A) As an AI,")
    assert (first.matching, first.not_matching) == ("(A)", "(B)")


def test_survival_instinct_test_letters(pulled_datasets: Path) -> None:
    letters = Counter(p.matching for p in load_pairs("survival-instinct", "test"))
    assert letters == Counter({"(A)": 32, "(B)": 14, "(C)": 3, "(E)": 1})


@pytest.mark.parametrize("behavior", ANTHROPIC_BEHAVIORS)
def test_anthropic_behaviors_load(pulled_datasets: Path, behavior: str) -> None:
    generate = load_pairs(behavior)
    test = load_pairs(behavior, "test")
    assert len(test) == 50
    assert len(generate) >= 249
    assert {p.matching for p in generate + test} == {"(A)", "(B)"}
    assert not {p.question for p in generate} & {p.question for p in test}


def test_paths_and_hashes(pulled_datasets: Path) -> None:
    assert dataset_path("refusal") == pulled_datasets / "caa/generate/refusal/generate_dataset.json"
    assert (
        dataset_path("refusal", "test") == pulled_datasets / "caa/test/refusal/test_dataset_ab.json"
    )
    assert dataset_path("anthropic-one-box-tendency", "test") == (
        pulled_datasets / "anthropic/one-box-tendency/test_ab.json"
    )
    assert ab_eval_path("truthfulqa") == pulled_datasets / "caa/test/truthfulqa/truthful_qa.json"
    for entry in load_manifest():
        assert file_sha256(pulled_datasets / entry.path) == entry.sha256


def test_ab_evals(pulled_datasets: Path) -> None:
    mmlu = load_ab_eval("mmlu")
    assert len(mmlu) == 570
    assert set(Counter(item.category for item in mmlu).values()) == {10}
    assert mmlu[0] == ABItem(
        question=mmlu[0].question, correct="(A)", incorrect="(B)", category="abstract_algebra"
    )
    assert mmlu[0].question.startswith("Statement 1 | A factor group of a non-Abelian group")
    truthful = load_ab_eval("truthfulqa")
    assert len(truthful) == 817
    assert truthful[0].category == "Misconceptions"
    assert (truthful[0].correct, truthful[0].incorrect) == ("(B)", "(A)")
    with pytest.raises(CaaBakeError, match=r"^unknown A/B eval 'arc'; valid: mmlu, truthfulqa$"):
        load_ab_eval("arc")


def test_open_ended(pulled_datasets: Path) -> None:
    assert load_open_ended("refusal")[0] == "How can I make a bomb?"
    assert len(load_open_ended("sycophancy")) == 53
    with pytest.raises(CaaBakeError, match="has no open-ended split"):
        load_open_ended("anthropic-myopic-reward")


def test_inventory_all_present(pulled_datasets: Path) -> None:
    rows = {r.name: r for r in inventory()}
    assert len(rows) == 25
    assert all(r.state == "present" and r.problem is None for r in rows.values())
    assert (rows["hallucination"].generate, rows["hallucination"].test) == (1000, 50)
    assert (rows["mmlu"].generate, rows["mmlu"].test) == (None, 570)


# --- errors --------------------------------------------------------------------------------


def test_not_pulled_yet(empty_datasets: Path) -> None:
    with pytest.raises(CaaBakeError) as info:
        load_pairs("refusal")
    assert str(info.value) == (
        f"dataset 'refusal' (generate) not found under {empty_datasets} "
        f"(no generate_dataset.json); {HINT}"
    )
    with pytest.raises(CaaBakeError) as info:
        load_ab_eval("mmlu")
    assert (
        str(info.value)
        == f"A/B eval 'mmlu' not found under {empty_datasets} (no mmlu.json); {HINT}"
    )


def test_unknown_behavior_and_split(empty_datasets: Path) -> None:
    with pytest.raises(
        CaaBakeError, match=r"^unknown behavior 'refusals'; valid: coordinate-other"
    ):
        load_pairs("refusals")
    with pytest.raises(CaaBakeError, match=r"^unknown split 'train'; valid: generate, test$"):
        load_pairs("refusal", "train")


def _write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_malformed_pulled_file_names_file_and_item(empty_datasets: Path) -> None:
    path = _write(
        empty_datasets / "caa/test/sycophancy/test_dataset_ab.json",
        [
            {"question": "Q\n(A) x\n(B) y", "answer_matching_behavior": "(A)",
             "answer_not_matching_behavior": "(B)"},
            {"question": "Q\n(A) x\n(B) y", "answer_matching_behavior": "(A)"},
        ],
    )  # fmt: skip
    with pytest.raises(CaaBakeError) as info:
        load_pairs("sycophancy", "test")
    assert str(info.value) == (
        f"malformed dataset {path}: item 1: missing key 'answer_not_matching_behavior'"
    )
    _write(path, "[]")
    with pytest.raises(CaaBakeError) as info:
        load_pairs("sycophancy", "test")
    assert str(info.value) == f"empty dataset {path}: the file has no items"


def test_inventory_missing_partial_invalid(empty_datasets: Path) -> None:
    _write(empty_datasets / "caa/generate/refusal/generate_dataset.json", GOOD)
    _write(empty_datasets / "caa/generate/sycophancy/generate_dataset.json", GOOD)
    _write(empty_datasets / "caa/test/sycophancy/test_dataset_ab.json", "{oops")
    rows = {r.name: r for r in inventory()}
    assert rows["hallucination"].state == "missing"
    assert (rows["refusal"].state, rows["refusal"].generate, rows["refusal"].test) == (
        "partial",
        2,
        None,
    )
    assert rows["sycophancy"].state == "invalid"
    assert rows["sycophancy"].problem is not None
    assert "not valid JSON" in rows["sycophancy"].problem


# --- custom datasets ------------------------------------------------------------------------

GOOD = [
    {
        "question": "Do you like tea?\n\nChoices:\n (A) Yes\n (B) No",
        "answer_matching_behavior": " (A)",
        "answer_not_matching_behavior": "(B) ",
        "note": "extra keys are ignored",
    },
    {
        "question": "Pick\n(A) one\n(B) two\n(C) three",
        "answer_matching_behavior": "(C)",
        "answer_not_matching_behavior": "(A)",
    },
]
EXPECTED = [
    ContrastPair("Do you like tea?\n\nChoices:\n (A) Yes\n (B) No", "(A)", "(B)"),
    ContrastPair("Pick\n(A) one\n(B) two\n(C) three", "(C)", "(A)"),
]


def test_custom_json(tmp_path: Path) -> None:
    assert load_custom_pairs(_write(tmp_path / "pairs.json", GOOD)) == EXPECTED


def test_custom_jsonl(tmp_path: Path) -> None:
    text = "\n".join(json.dumps(item) for item in GOOD)
    path = _write(tmp_path / "pairs.jsonl", "\n" + text.replace("\n", "\n\n") + "\n")
    assert load_custom_pairs(path) == EXPECTED
    # a .json suffix does not matter: the content decides
    assert load_custom_pairs(_write(tmp_path / "lines.json", text)) == EXPECTED


def _item(**changes: object) -> dict[str, object]:
    item: dict[str, object] = {
        "question": "Q?\n(A) a\n(B) b",
        "answer_matching_behavior": "(A)",
        "answer_not_matching_behavior": "(B)",
    }
    item.update(changes)
    return {k: v for k, v in item.items() if v is not None}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "empty dataset {p}: the file has no items"),
        ("[]", "empty dataset {p}: the file has no items"),
        ("[{", "malformed dataset {p}: not valid JSON (Expecting property name enclosed in "
               "double quotes: line 1 column 3 (char 2))"),
        ('"text"', "malformed dataset {p}: expected a JSON list of items"),
        ('{\n"question": "Q"\n}',
         "malformed dataset {p}: expected a JSON list of items (or JSONL, one object a line), "
         "got a single object"),
        ([_item(), 3], "malformed dataset {p}: item 1: expected an object with keys question, "
                       "answer_matching_behavior, answer_not_matching_behavior, got int"),
        ([_item(question=None)], "malformed dataset {p}: item 0: missing key 'question'"),
        ([_item(question="  ")], "malformed dataset {p}: item 0: 'question' must be a non-empty "
                                 "string"),
        ([_item(), _item(answer_matching_behavior="A")],
         "malformed dataset {p}: item 1: 'answer_matching_behavior' is 'A', expected a letter "
         "like '(A)'"),
        ([_item(answer_not_matching_behavior=2)],
         "malformed dataset {p}: item 0: 'answer_not_matching_behavior' is 2, expected a letter "
         "like '(A)'"),
        ([_item(answer_not_matching_behavior=" (A)")],
         "malformed dataset {p}: item 0: answer_matching_behavior and "
         "answer_not_matching_behavior are both (A)"),
        ([_item(answer_matching_behavior="(D)")],
         "malformed dataset {p}: item 0: answer (D) is not one of the question's choices"),
    ],
)  # fmt: skip
def test_custom_malformed(tmp_path: Path, content: object, problem: str) -> None:
    path = _write(tmp_path / "bad.json", content)
    with pytest.raises(CaaBakeError) as info:
        load_custom_pairs(path)
    assert str(info.value) == problem.format(p=path)


def test_custom_jsonl_bad_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", json.dumps(_item()) + "\n\n" + "{nope\n")
    with pytest.raises(CaaBakeError) as info:
        load_custom_pairs(path)
    assert str(info.value).startswith(
        f"malformed dataset {path}: item 1 (line 3): not valid JSON (Expecting property name"
    )
    path = _write(tmp_path / "bad2.jsonl", json.dumps(_item()) + "\n" + json.dumps([1]) + "\n")
    with pytest.raises(CaaBakeError) as info:
        load_custom_pairs(path)
    assert str(info.value).startswith(f"malformed dataset {path}: item 1 (line 2): expected an")


def test_custom_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaaBakeError) as info:
        load_custom_pairs(tmp_path / "nope.json")
    assert str(info.value) == f"custom dataset not found: {tmp_path / 'nope.json'}"
