"""``caa-bake export / verify / inspect / unbake`` from the command line.

Bad input must give one ``error:`` line, exit code 1, and write nothing. A ``kill -9``
during an export must leave nothing at the target path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_models import build_model, tree_digest

from caa_bake.steering.vector import SteeringVector
from cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    """Run ``caa-bake ARGS`` in this process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["caa-bake", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    exports = tmp_path / "exported_models"
    monkeypatch.setenv("CAA_BAKE_EXPORTS_DIR", str(exports))
    return exports


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model("llama", tmp_path_factory.mktemp("cli") / "tiny-llama")


@pytest.fixture(scope="module")
def vector_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gen = torch.Generator().manual_seed(11)
    vec = SteeringVector({1: torch.randn(32, generator=gen), 2: torch.randn(32, generator=gen)})
    return vec.save(tmp_path_factory.mktemp("vec") / "custom.safetensors")


def _one_error_line(code: int, out: str, err: str, message: str) -> None:
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert message in lines[0], lines[0]
    assert "Traceback" not in err + out


def test_export_verifies_and_prints_the_name(
    source: Path,
    vector_file: Path,
    workspace: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = tree_digest(source)
    code, out, _err = run_cli(
        ["export", "--model", str(source), "--behavior", "custom", "--layer", "1",
         "--mult", "-2", "--vector", str(vector_file)],
        capsys,
        monkeypatch,
    )  # fmt: skip
    assert code == 0
    target = workspace / "tiny-llama-custom-L1-m-2"
    assert out.splitlines()[-1] == f"exported: {target}"
    assert "verify: OK" in out
    assert f"export: {target}" in out
    assert tree_digest(source) == before
    config = json.loads((target / "config.json").read_text())
    assert config["caa_bake"]["bakes"][0]["vector_source"] == "file:custom.safetensors"


def test_stacked_bakes_then_inspect_unbake_verify(
    source: Path,
    vector_file: Path,
    workspace: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out_dir = tmp_path / "stacked"
    code, out, _ = run_cli(
        ["export", "--model", str(source), "--bake", f"{vector_file}:1:1.5",
         "--bake", f"{vector_file}:2:-0.5", "--out", str(out_dir), "--no-verify", "--link"],
        capsys,
        monkeypatch,
    )  # fmt: skip
    assert code == 0
    assert out.splitlines()[-1] == f"exported: {out_dir}"
    code, out, _ = run_cli(["inspect", str(out_dir)], capsys, monkeypatch)
    assert code == 0
    assert "  custom: layer 1, multiplier 1.5" in out
    assert "  custom: layer 2, multiplier -0.5" in out
    code, out, _ = run_cli(
        ["verify", str(out_dir), "--no-lm-eval", "--tokens", "3"], capsys, monkeypatch
    )
    assert code == 0
    assert out.splitlines()[-1] == "verify: OK"
    code, out, _ = run_cli(
        ["unbake", str(out_dir), "--out", str(tmp_path / "orig")], capsys, monkeypatch
    )
    assert code == 0
    assert tree_digest(tmp_path / "orig") == tree_digest(source)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mult", "nan"], "multiplier must be a finite number, got nan"),
        (["--mult", "inf"], "multiplier must be a finite number, got inf"),
        (["--layer", "4"], "layer 4 is out of range: the model has 4 layers (0-3)"),
        (["--behavior", "no/slash"], "behavior name 'no/slash' must use letters"),
    ],
)
def test_bad_arguments_write_nothing(
    source: Path,
    vector_file: Path,
    workspace: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    message: str,
) -> None:
    args = {"--behavior": "custom", "--layer": "1", "--mult": "1"}
    args.update(dict(zip(extra[::2], extra[1::2], strict=True)))
    flat = [item for pair in args.items() for item in pair]
    code, out, err = run_cli(
        ["export", "--model", str(source), "--vector", str(vector_file), *flat],
        capsys,
        monkeypatch,
    )
    _one_error_line(code, out, err, message)
    assert not workspace.exists()


def test_wrong_vector_size(
    source: Path, workspace: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    small = SteeringVector({1: torch.ones(16)}).save(tmp_path / "small.safetensors")
    code, out, err = run_cli(
        ["export", "--model", str(source), "--bake", f"{small}:1:1"], capsys, monkeypatch
    )
    _one_error_line(code, out, err, "vector dimension 16 does not match the model's hidden size 32")
    assert not workspace.exists()


def test_unsupported_architecture(
    vector_file: Path, workspace: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    gemma = build_model("gemma2", tmp_path / "gemma")
    code, out, err = run_cli(
        ["export", "--model", str(gemma), "--bake", f"{vector_file}:1:1"], capsys, monkeypatch
    )
    _one_error_line(code, out, err, "cannot bake into gemma2: a norm follows the MLP")
    assert not workspace.exists()


def test_existing_output_needs_force(
    source: Path, vector_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    out_dir = tmp_path / "taken"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")
    args = ["export", "--model", str(source), "--bake", f"{vector_file}:1:1", "--out", str(out_dir)]
    code, out, err = run_cli([*args, "--no-verify"], capsys, monkeypatch)
    _one_error_line(code, out, err, "already exists; pass --force to replace it")
    assert [p.name for p in out_dir.iterdir()] == ["keep.txt"]
    code, out, err = run_cli([*args, "--no-verify", "--force"], capsys, monkeypatch)
    assert code == 0
    assert not (out_dir / "keep.txt").exists()
    assert (out_dir / "config.json").is_file()


def test_unwritable_output_folder(
    source: Path, vector_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    code, out, err = run_cli(
        ["export", "--model", str(source), "--bake", f"{vector_file}:1:1",
         "--out", str(blocker / "out")],
        capsys,
        monkeypatch,
    )  # fmt: skip
    _one_error_line(code, out, err, f"cannot create the output folder {blocker}")


def test_corrupt_header_and_missing_shard(
    vector_file: Path, workspace: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    src = build_model("llama", tmp_path / "broken", max_shard_size="100KB")
    shards = sorted(src.glob("model-*.safetensors"))
    data = bytearray(shards[0].read_bytes())
    data[8:10] = b"?!"
    shards[0].write_bytes(bytes(data))
    args = ["export", "--model", str(src), "--bake", f"{vector_file}:1:1"]
    code, out, err = run_cli(args, capsys, monkeypatch)
    _one_error_line(code, out, err, f"corrupt safetensors header in {shards[0]}")
    shards[0].unlink()
    code, out, err = run_cli(args, capsys, monkeypatch)
    _one_error_line(code, out, err, f"shard {shards[0].name} named in model.safetensors.index.json")
    assert not workspace.exists()


def test_incomplete_options(
    source: Path, vector_file: Path, workspace: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    code, out, err = run_cli(
        ["export", "--model", str(source), "--behavior", "x", "--mult", "1"], capsys, monkeypatch
    )
    _one_error_line(code, out, err, "give --behavior, --layer and --mult together")
    code, out, err = run_cli(
        ["export", "--model", str(source), "--vector", str(vector_file)], capsys, monkeypatch
    )
    _one_error_line(code, out, err, "--vector needs --behavior")
    code, out, err = run_cli(["export", "--model", str(source)], capsys, monkeypatch)
    _one_error_line(code, out, err, "nothing to bake")
    code, out, err = run_cli(["inspect", str(source)], capsys, monkeypatch)
    _one_error_line(code, out, err, "is not a caa-bake export")
    assert not workspace.exists()


def test_kill_9_leaves_nothing_at_the_target(vector_file: Path, tmp_path: Path) -> None:
    src = build_model("llama", tmp_path / "src", max_shard_size="100KB")
    before = tree_digest(src)
    parent = tmp_path / "exports"
    target = parent / "killed"
    env = {
        **os.environ,
        "CAA_BAKE_TEST_EXPORT_DELAY": "30",
        "CAA_BAKE_QUIET": "1",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "export", "--model", str(src),
         "--bake", f"{vector_file}:1:1", "--out", str(target), "--no-verify"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        partial: list[Path] = []
        while time.monotonic() < deadline and proc.poll() is None:
            partial = (
                list(parent.glob(".killed.tmp-*/model-*.safetensors")) if parent.exists() else []
            )
            if partial:
                break
            time.sleep(0.1)
        errors = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
        assert partial, f"the export never started writing: {errors}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()
    assert all(p.name.startswith(".killed.tmp-") for p in parent.iterdir())
    assert tree_digest(src) == before


def test_without_vector_the_cache_is_asked_for_the_normalized_vector(
    source: Path, workspace: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The CLI's default path: ``vector_cache.get_vector``, normalized unless --no-normalize.

    ``get_vector`` (extraction, tested on its own) is replaced by a stand-in that records its
    arguments; what is under test is the export command's use of it.
    """
    import caa_bake.steering.cache

    calls: list[tuple[str, list[int], bool]] = []

    def fake_get_vector(
        ref: object,
        behavior: str,
        layers: list[int],
        *,
        normalized: bool = True,
        dtype: torch.dtype = torch.float64,
        normalize_with: object = "unset",
    ) -> SteeringVector:
        assert dtype == torch.float32  # --dtype auto: extraction in float32
        assert normalize_with is None  # the default set: the 7 CAA behaviors
        calls.append((behavior, list(layers), normalized))
        norm = json.dumps({"behaviors": ["refusal", "sycophancy"]}) if normalized else "none"
        gen = torch.Generator().manual_seed(5)
        vectors = {layer: torch.randn(32, generator=gen) for layer in layers}
        return SteeringVector(vectors, {"normalization": norm})

    # the export reaches get_vector through the steering package's public face
    monkeypatch.setattr(caa_bake.steering, "get_vector", fake_get_vector)
    base = ["export", "--model", str(source), "--no-verify"]
    code, out, _ = run_cli(
        [*base, "--bake", "Sycophancy:1:1", "--bake", "sycophancy:2:1", "--bake", "refusal:1:-1"],
        capsys,
        monkeypatch,
    )
    assert code == 0
    assert calls == [("sycophancy", [1, 2], True), ("refusal", [1], True)]
    block = json.loads(
        (workspace / out.splitlines()[-1].split("/")[-1] / "config.json").read_text()
    )
    assert [b["normalization_set"] for b in block["caa_bake"]["bakes"]] == [
        ["refusal", "sycophancy"]
    ] * 3
    calls.clear()
    code, out, _ = run_cli(
        [*base, "-b", "refusal", "-l", "2", "--mult", "0.5", "--no-normalize"], capsys, monkeypatch
    )
    assert code == 0
    assert calls == [("refusal", [2], False)]
    code, out, err = run_cli([*base, "--bake", "sycophantic:1:1"], capsys, monkeypatch)
    _one_error_line(code, out, err, "sycophantic")
    assert calls == [("refusal", [2], False)]


@pytest.mark.slow
def test_default_path_extracts_and_bakes_smollm2(
    pulled_datasets: object, workspace: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """No --vector, on the real SmolLM2: extract (with progress), export, verify.

    ``--no-normalize`` and the smallest behavior (290 pairs) keep it to one extraction; the
    normalized default needs all 7 behaviors (~4,900 pairs) and its wiring is tested above.
    """
    monkeypatch.setenv("CAA_BAKE_VECTORS_DIR", str(tmp_path / "vectors"))
    code, out, err = run_cli(
        ["export", "--behavior", "corrigible-neutral-HHH", "--layer", "13", "--mult", "1",
         "--no-normalize"],
        capsys,
        monkeypatch,
    )  # fmt: skip
    assert code == 0, err
    target = workspace / "smollm2-135m-instruct-corrigible-neutral-HHH-L13-m1"
    assert out.splitlines()[-1] == f"exported: {target}"
    assert "verify: OK" in out
    block = json.loads((target / "config.json").read_text())["caa_bake"]
    assert block["bakes"][0]["normalized"] is False
    assert block["source"]["model_id"] == "smollm2-135m-instruct"
    assert (
        tmp_path / "vectors" / "smollm2-135m-instruct" / "corrigible-neutral-HHH.safetensors"
    ).is_file()


_REFUSAL_L1 = ["--behavior", "refusal", "--layer", "1", "--mult", "1"]


def test_vector_from_a_model_of_other_shapes(
    source: Path, workspace: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    wider = build_model("llama", tmp_path / "wider", hidden_size=48)
    capsys.readouterr()  # the save progress bar
    before = tree_digest(source)
    code, out, err = run_cli(
        ["export", "--model", str(source), "--vector-from", str(wider), *_REFUSAL_L1],
        capsys,
        monkeypatch,
    )
    _one_error_line(code, out, err, "its vectors do not fit")
    assert not workspace.exists()
    assert tree_digest(source) == before


def test_vector_from_with_a_vector_file(
    source: Path, vector_file: Path, workspace: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    code, out, err = run_cli(
        [
            "export",
            "--model",
            str(source),
            "--vector-from",
            str(source),
            "--vector",
            str(vector_file),
            "--behavior",
            "custom",
            "--layer",
            "1",
            "--mult",
            "1",
        ],
        capsys,
        monkeypatch,
    )
    _one_error_line(code, out, err, "cannot be used with --vector")
    assert not workspace.exists()
