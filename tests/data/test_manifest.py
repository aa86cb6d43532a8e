"""``caa_bake.data.manifest``: the committed manifest loads; broken ones give one clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from caa_bake.core.errors import CaaBakeError
from caa_bake.data.manifest import ManifestEntry, load_manifest, manifest_path

SHA = "0123456789abcdef" * 4
GOOD: dict[str, Any] = {
    "path": "caa/generate/refusal/generate_dataset.json",
    "url": "https://example.org/generate_dataset.json",
    "sha256": SHA,
    "size": 123,
}


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_the_committed_manifest_is_valid() -> None:
    path = manifest_path()
    assert path.name in ("manifest.json", "_manifest.json")
    entries = load_manifest()
    assert len(entries) == 41
    paths = [e.path for e in entries]
    assert len(set(paths)) == len(paths)
    assert "caa/generate/refusal/generate_dataset.json" in paths
    assert all(e.url.startswith("https://") and len(e.sha256) == 64 for e in entries)
    assert sum(e.size for e in entries) > 1_000_000


def test_a_valid_file_loads_into_entries(tmp_path: Path) -> None:
    other = {**GOOD, "path": "mmlu/test.json", "size": 0}
    path = _write(tmp_path, {"format": 1, "files": [GOOD, other]})
    assert load_manifest(path) == [
        ManifestEntry(GOOD["path"], GOOD["url"], SHA, 123),
        ManifestEntry("mmlu/test.json", GOOD["url"], SHA, 0),
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"path": ""}, "file entry 0: missing 'path'"),
        ({"path": None}, "file entry 0: missing 'path'"),
        ({"path": "/etc/passwd"}, "file entry 0: unsafe path '/etc/passwd'"),
        ({"path": "caa/../../x.json"}, "file entry 0: unsafe path 'caa/../../x.json'"),
        ({"path": "caa\\x.json"}, "unsafe path"),
        ({"url": "http://example.org/x"}, "'url' must be an https:// URL"),
        ({"url": 5}, "'url' must be an https:// URL"),
        ({"sha256": SHA.upper()}, "'sha256' must be 64 lowercase hex digits"),
        ({"sha256": SHA[:-1]}, "'sha256' must be 64 lowercase hex digits"),
        ({"size": -1}, "'size' must be a non-negative integer"),
        ({"size": "12"}, "'size' must be a non-negative integer"),
        ({"size": True}, "'size' must be a non-negative integer"),
        ({"size": 1.5}, "'size' must be a non-negative integer"),
    ],
)
def test_bad_entries_name_the_file_and_the_entry(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    path = _write(tmp_path, {"files": [{**GOOD, **change}]})
    with pytest.raises(CaaBakeError) as info:
        load_manifest(path)
    text = str(info.value)
    assert text.startswith(f"broken dataset manifest {path}: ")
    assert message in text
    assert "\n" not in text


def test_entry_that_is_not_an_object(tmp_path: Path) -> None:
    path = _write(tmp_path, {"files": [GOOD, ["a", "list"]]})
    with pytest.raises(CaaBakeError, match="file entry 1: not an object"):
        load_manifest(path)


@pytest.mark.parametrize("data", [{"files": []}, {"files": {}}, {"format": 1}, ["files"]])
def test_no_files_list(tmp_path: Path, data: object) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(CaaBakeError, match="no 'files' list"):
        load_manifest(path)


def test_duplicate_paths(tmp_path: Path) -> None:
    path = _write(tmp_path, {"files": [GOOD, {**GOOD, "size": 5}]})
    with pytest.raises(CaaBakeError, match="duplicate paths"):
        load_manifest(path)


def test_unreadable_or_not_json(tmp_path: Path) -> None:
    with pytest.raises(CaaBakeError, match=r"cannot read dataset manifest .*missing\.json"):
        load_manifest(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(CaaBakeError, match=r"cannot read dataset manifest .*broken\.json"):
        load_manifest(broken)
