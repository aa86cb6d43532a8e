"""Custom behaviors: a user's pair file validated, split (seeded, recorded) and registered in
the workspace, then known by name to the loaders; bad names and tiny test splits refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caa_bake.core.errors import CaaBakeError
from caa_bake.core.hashing import file_sha256
from caa_bake.data.behaviors import check_behavior, is_custom, registered_behaviors
from caa_bake.data.custom import MIN_TEST_ITEMS, custom_record, prepare_custom
from caa_bake.data.datasets import dataset_path, inventory, load_pairs


def _items(n: int, tag: str = "Q") -> list[dict[str, str]]:
    return [
        {
            "question": f"{tag}{i}: would you?\n\nChoices:\n(A) Yes.\n(B) No.",
            "answer_matching_behavior": "(A)" if i % 2 else "(B)",
            "answer_not_matching_behavior": "(B)" if i % 2 else "(A)",
        }
        for i in range(n)
    ]


def _file(folder: Path, name: str, items: list[dict[str, str]], jsonl: bool = False) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if jsonl:
        path.write_text("".join(json.dumps(item) + "\n" for item in items))
    else:
        path.write_text(json.dumps(items))
    return path


@pytest.fixture(autouse=True)
def datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "datasets"
    monkeypatch.setenv("CAA_BAKE_DATASETS_DIR", str(folder))
    return folder


def test_a_small_file_is_registered_whole_and_unchanged(tmp_path: Path, datasets: Path) -> None:
    path = _file(tmp_path / "in", "honesty.jsonl", _items(6), jsonl=True)
    custom = prepare_custom(None, path)
    assert custom.name == "honesty" and custom.test is None and len(custom.generate) == 6
    assert custom.record["split"]["rule"] == "none"
    assert "fewer than the 50 needed" in custom.record["split"]["reason"]
    assert not datasets.exists()  # preparing writes nothing
    assert not is_custom("honesty")
    folder = custom.register()
    assert folder == datasets / "custom" / "honesty"
    assert sorted(p.name for p in folder.iterdir()) == ["behavior.json", "generate.json"]
    assert file_sha256(folder / "generate.json") == file_sha256(path)  # the user's own bytes
    assert registered_behaviors() == ["honesty"] and check_behavior("honesty") == "honesty"
    assert load_pairs("honesty", "generate") == custom.generate
    with pytest.raises(CaaBakeError, match=r"has no test split \(honesty.jsonl has 6 pairs"):
        load_pairs("honesty", "test")
    row = next(r for r in inventory() if r.name == "honesty")
    assert (row.kind, row.generate, row.test, row.state) == ("custom", 6, None, "present")


def test_a_large_file_is_split_seeded_and_recorded(tmp_path: Path) -> None:
    items = _items(63)
    path = _file(tmp_path, "mine.json", items)
    first, second = prepare_custom("mine", path), prepare_custom("mine", path)
    assert first.record == second.record  # deterministic
    split = first.record["split"]
    assert (split["generate"], split["test"]) == (51, 12)  # 63 // 5 held out
    held = split["test_indices"]
    assert held == sorted(held) and len(set(held)) == 12
    questions = [i["question"] for i in items]
    assert [p.question for p in first.test or []] == [questions[i] for i in held]
    assert [p.question for p in first.generate] == [
        q for i, q in enumerate(questions) if i not in held
    ]
    first.register()
    assert len(load_pairs("mine", "test")) == 12
    assert custom_record("mine") == first.record
    assert first.record["source_sha256"] == file_sha256(path)
    # 300 pairs: the held-out part is capped at 50, like the Anthropic behaviors
    big = prepare_custom("big", _file(tmp_path, "big.json", _items(300)))
    assert big.record["split"]["test"] == 50


def test_a_test_file_and_re_registration(tmp_path: Path, datasets: Path) -> None:
    path = _file(tmp_path, "mine.json", _items(8))
    test = _file(tmp_path, "mine-test.json", _items(MIN_TEST_ITEMS, "T"))
    custom = prepare_custom("mine", path, test)
    assert custom.record["split"] == {"rule": "test file", "generate": 8, "test": 10}
    folder = custom.register()
    stamp = (folder / "behavior.json").stat().st_mtime_ns
    assert prepare_custom("mine", path, test).register() == folder
    assert (folder / "behavior.json").stat().st_mtime_ns == stamp  # identical: untouched
    assert file_sha256(folder / "test_ab.json") == file_sha256(test)
    # other content under the same name replaces the registration (no test split now)
    _file(tmp_path, "mine.json", _items(9))
    prepare_custom("mine", path).register()
    assert sorted(p.name for p in folder.iterdir()) == ["behavior.json", "generate.json"]
    assert len(load_pairs("mine", "generate")) == 9
    assert dataset_path("mine", "test") == folder / "test_ab.json"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("my behavior", "no spaces, dots or path separators"),
        ("a/b", "no spaces, dots or path separators"),
        ("../up", "no spaces, dots or path separators"),
        ("x.y", "no spaces, dots or path separators"),
        ("refusal", "collides with the built-in behavior 'refusal'"),
        ("Sycophancy", "collides with the built-in behavior 'sycophancy'"),
        ("anthropic-wealth-seeking-inclination", "collides with the built-in behavior"),
        ("anthropic-mine", "reserved for the converted Anthropic behaviors"),
        ("mmlu", "is a reserved name"),
    ],
)
def test_bad_names_are_refused(name: str, message: str, tmp_path: Path, datasets: Path) -> None:
    path = _file(tmp_path, "ok.json", _items(4))
    with pytest.raises(CaaBakeError, match=message.replace(".", r"\.").replace("(", r"\(")):
        prepare_custom(name, path)
    assert not datasets.exists()


def test_a_file_named_like_a_built_in_behavior_needs_a_name(tmp_path: Path) -> None:
    path = _file(tmp_path, "refusal.json", _items(4))
    with pytest.raises(CaaBakeError, match="give your dataset another name with --behavior"):
        prepare_custom(None, path)
    assert prepare_custom("my-refusal", path).name == "my-refusal"


def test_a_tiny_test_split_is_refused(tmp_path: Path, datasets: Path) -> None:
    path = _file(tmp_path, "mine.json", _items(8))
    test = _file(tmp_path, "t.json", _items(MIN_TEST_ITEMS - 1, "T"))
    with pytest.raises(CaaBakeError, match="has 9 item\\(s\\); a test split needs at least 10"):
        prepare_custom("mine", path, test)
    assert not datasets.exists()
