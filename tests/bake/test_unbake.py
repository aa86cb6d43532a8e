"""``caa_bake.bake.unbake``: an export's source comes back byte for byte; bad input is refused
with one clear error and nothing written.

Exports are made through the real ``caa-bake export`` command (in this process), so this file
imports nothing from ``caa_bake.bake.export``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import build_model, tree_digest

from caa_bake.bake.unbake import unbake_checkpoint
from caa_bake.core.errors import CaaBakeError
from caa_bake.steering.vector import SteeringVector
from cli.main import main


@pytest.fixture(scope="module")
def vector_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gen = torch.Generator().manual_seed(3)
    vec = SteeringVector({1: torch.randn(32, generator=gen), 2: torch.randn(32, generator=gen)})
    return vec.save(tmp_path_factory.mktemp("unbake-vec") / "v.safetensors")


def _export(
    monkeypatch: pytest.MonkeyPatch, src: Path, vector: Path, out: Path, *extra: str
) -> Path:
    """``caa-bake export`` of ``vector`` at layers 1 (x1.5) and 2 (x-2) into ``out``."""
    args = ["export", "--model", str(src), "--bake", f"{vector}:1:1.5", "--bake",
            f"{vector}:2:-2", "--out", str(out), "--no-verify", "--quiet", *extra]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["caa-bake", *args])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code in (0, None)
    return out


def _source(tmp_path: Path, arch: str = "llama", **options: object) -> Path:
    src = build_model(arch, tmp_path / "src", **options)  # type: ignore[arg-type]
    (src / "README.md").write_text("# the original card\n")
    return src


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    ("arch", "options"),
    [
        ("llama", {}),  # single file: renamed in the export, bias shard added
        ("llama", {"max_shard_size": "100KB"}),  # sharded, index rewritten
        ("gpt2", {"random_biases": True}),  # native biases patched in place
    ],
    ids=["single", "sharded", "patched"],
)
def test_restores_the_source_byte_for_byte(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    vector_file: Path,
    arch: str,
    options: dict[str, object],
) -> None:
    src = _source(tmp_path, arch, **options)
    before = tree_digest(src)
    export = _export(monkeypatch, src, vector_file, tmp_path / "export")
    assert tree_digest(export) != before
    restored = unbake_checkpoint(export, tmp_path / "restored")
    assert restored == (tmp_path / "restored").absolute()
    assert tree_digest(restored) == before
    assert "caa_bake" not in json.loads((restored / "config.json").read_text())
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_link_shares_unchanged_shards_and_copies_patched_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vector_file: Path
) -> None:
    src = _source(tmp_path, "gpt2", random_biases=True, max_shard_size="100KB")
    export = _export(monkeypatch, src, vector_file, tmp_path / "export")
    restored = unbake_checkpoint(export, tmp_path / "restored", link=True)
    assert tree_digest(restored) == tree_digest(src)
    index = json.loads((export / "model.safetensors.index.json").read_text())
    patched = {index["weight_map"][f"transformer.h.{i}.mlp.c_proj.bias"] for i in (1, 2)}
    shards = sorted(p.name for p in src.glob("*.safetensors"))
    assert set(shards) > patched  # some shards untouched, some patched
    # a patched shard is rewritten into a copy, never through a link to the export's file
    # (unchanged shards are hard links or reflinks; a reflink has its own inode)
    for name in patched:
        assert os.stat(restored / name).st_ino != os.stat(export / name).st_ino
        assert (export / name).read_bytes() != (src / name).read_bytes()


def test_an_existing_target_needs_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vector_file: Path
) -> None:
    src = _source(tmp_path)
    export = _export(monkeypatch, src, vector_file, tmp_path / "export")
    out = tmp_path / "restored"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(CaaBakeError, match="already exists; pass --force"):
        unbake_checkpoint(export, out)
    assert _listing(out) == ["mine.txt"]
    unbake_checkpoint(export, out, force=True)
    assert tree_digest(out) == tree_digest(src)


def test_a_plain_model_is_not_an_export(tmp_path: Path) -> None:
    src = _source(tmp_path)
    with pytest.raises(CaaBakeError, match="not a caa-bake export"):
        unbake_checkpoint(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(CaaBakeError, match=r"has no config\.json: not a model folder"):
        unbake_checkpoint(tmp_path, tmp_path.parent / "unbake-out-never")
    assert not (tmp_path.parent / "unbake-out-never").exists()


def test_target_inside_the_export_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vector_file: Path
) -> None:
    export = _export(monkeypatch, _source(tmp_path), vector_file, tmp_path / "export")
    before = tree_digest(export)
    with pytest.raises(CaaBakeError, match="overlaps the source folder"):
        unbake_checkpoint(export, export / "restored")
    with pytest.raises(CaaBakeError, match="overlaps the source folder"):
        unbake_checkpoint(export, export, force=True)
    assert tree_digest(export) == before


def test_missing_source_config_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vector_file: Path
) -> None:
    export = _export(monkeypatch, _source(tmp_path), vector_file, tmp_path / "export")
    (export / "caa_bake" / "source" / "config.json").unlink()
    with pytest.raises(CaaBakeError, match=r"caa_bake/source/config\.json is missing"):
        unbake_checkpoint(export, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_export_without_its_file_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vector_file: Path
) -> None:
    """A checkpoint baked in memory carries the provenance block but not the unbake files."""
    export = _export(monkeypatch, _source(tmp_path), vector_file, tmp_path / "export")
    config_path = export / "config.json"
    config = json.loads(config_path.read_text())
    del config["caa_bake"]["files"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(CaaBakeError, match=r"baked in memory .* reload the original model"):
        unbake_checkpoint(export, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unbake_through_the_cli(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    vector_file: Path,
) -> None:
    src = _source(tmp_path)
    export = _export(monkeypatch, src, vector_file, tmp_path / "export")
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["caa-bake", "unbake", str(export), "-o", str(tmp_path / "r")])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code in (0, None)
    assert capsys.readouterr().out.strip() == f"restored: {tmp_path / 'r'}"
    assert tree_digest(tmp_path / "r") == tree_digest(src)
    monkeypatch.setattr(sys, "argv", ["caa-bake", "unbake", str(src), "-o", str(tmp_path / "x")])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not a caa-bake export" in err[0]
    assert not (tmp_path / "x").exists()
