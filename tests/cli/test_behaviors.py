"""Every behavior through every command (issue 9): a custom pair file registered once by
name and then used by extract, export, sweep and eval; an ``anthropic-*`` behavior in
eval; ``--normalize-with``; and the bad inputs (one ``error:`` line, exit 1, nothing
written). Tiny random Llama, cached random vectors for the 7 CAA behaviors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_runner import assert_one_error, files_under, run_in_process
from workspaces import cached_workspace, linked_datasets

from caa_bake.core.hashing import file_sha256
from caa_bake.data.behaviors import CAA_BEHAVIORS
from caa_bake.data.datasets import dataset_path
from caa_bake.models.loading import resolve_model
from caa_bake.steering.vector import SteeringVector

ANTHROPIC = "anthropic-wealth-seeking-inclination"


def _cache_random_vector(env: dict[str, str], model_dir: Path, behavior: str) -> None:
    """A random raw vector in the cache, as extraction would have left it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAA_BAKE_DATASETS_DIR", env["CAA_BAKE_DATASETS_DIR"])
        ref = resolve_model(str(model_dir))
        meta = {
            "model_id": ref.model_id,
            "weights_fingerprint": ref.weights_fingerprint,
            "behavior": behavior,
            "dataset_sha256": file_sha256(dataset_path(behavior, "generate")),
        }
    gen = torch.Generator().manual_seed(7)
    vec = SteeringVector({layer: torch.randn(32, generator=gen) for layer in range(4)}, meta)
    vec.save(Path(env["CAA_BAKE_VECTORS_DIR"]) / ref.slug / f"{behavior}.safetensors")


def _items(n: int, tag: str = "Q") -> list[dict[str, str]]:
    return [
        {
            "question": f"{tag}{i}: keep the money?\n\nChoices:\n(A) Yes.\n(B) No.",
            "answer_matching_behavior": "(A)" if i % 3 else "(B)",
            "answer_not_matching_behavior": "(B)" if i % 3 else "(A)",
        }
        for i in range(n)
    ]


@pytest.fixture
def env(tiny_models: dict[str, Path], pulled_datasets: Path, tmp_path: Path) -> dict[str, str]:
    own = linked_datasets(pulled_datasets, tmp_path / "ws" / "datasets")
    return {**cached_workspace(tmp_path / "ws", tiny_models["llama"], own), "CAA_BAKE_QUIET": "1"}


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "greed.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_items(60)))
    return path


def _cli(env: dict[str, str], capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch,
         *args: str) -> tuple[int, str, str]:  # fmt: skip
    return run_in_process(*args, capsys=capsys, monkeypatch=mp, env=env)


def test_a_custom_behavior_through_every_command(
    env: dict[str, str],
    pairs: Path,
    tiny_models: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = str(tiny_models["llama"])
    ws = Path(env["CAA_BAKE_HOME"])
    # extract registers the file as 'greed' (60 pairs: 12 held out, seeded) and extracts
    code, _out, err = _cli(env, capsys, monkeypatch, "extract", "-b", "greed", "--dataset",
                          str(pairs), "--model", model, "-l", "1", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    registered = Path(env["CAA_BAKE_DATASETS_DIR"]) / "custom" / "greed"
    record = json.loads((registered / "behavior.json").read_text())
    assert (record["split"]["generate"], record["split"]["test"]) == (48, 12)
    vec = SteeringVector.load(Path(env["CAA_BAKE_VECTORS_DIR"]) / "llama" / "greed.safetensors")
    meta = vec.metadata
    assert meta["num_pairs"] == "48" and meta["behavior_kind"] == "custom"
    assert meta["dataset_sha256"] == file_sha256(registered / "generate.json")
    assert meta["dataset_source_sha256"] == file_sha256(pairs)
    assert meta["dataset_file"] == "greed.json"
    assert json.loads(meta["dataset_split"])["test_indices"] == record["split"]["test_indices"]

    # export finds it by name; normalized against the 7 CAA vectors by default ...
    code, _out, err = _cli(env, capsys, monkeypatch, "export", "-b", "greed", "-l", "1",
                          "--mult", "2", "--model", model, "--no-verify")  # fmt: skip
    assert code == 0, err
    folder = ws / "exported_models" / "llama-greed-L1-m2"
    (bake,) = json.loads((folder / "config.json").read_text())["caa_bake"]["bakes"]
    assert bake["normalization_set"] == sorted(CAA_BEHAVIORS)
    assert bake["dataset_sha256"] == meta["dataset_sha256"]
    # ... or against a set the user names, recorded the same way
    code, _out, err = _cli(env, capsys, monkeypatch, "export", "-b", "greed", "-l", "1",
                          "--mult", "2", "--model", model, "--no-verify", "--normalize-with",
                          "refusal,sycophancy", "--out", str(ws / "two"))  # fmt: skip
    assert code == 0, err
    (bake2,) = json.loads((ws / "two" / "config.json").read_text())["caa_bake"]["bakes"]
    assert bake2["normalization_set"] == ["refusal", "sycophancy"]
    raw = {
        b: SteeringVector.load(Path(env["CAA_BAKE_VECTORS_DIR"]) / "llama" / f"{b}.safetensors")
        for b in ("refusal", "sycophancy")
    }
    want = sum(float(v[1].norm()) for v in raw.values()) / 2
    assert bake2["vector_norm"] == pytest.approx(want, rel=1e-5)

    # sweep and eval by name: the registered test split, hashes in the results
    code, _out, err = _cli(env, capsys, monkeypatch, "sweep", "-b", "greed", "--layers", "1",
                          "--mults", "1", "--limit", "2", "--model", model, "--device", "cpu",
                          "--run", "sw")  # fmt: skip
    assert code == 0, err
    sweep = json.loads((ws / "results" / "sw" / "sweep.json").read_text())
    data = sweep["behavior_data"]["greed"]
    assert data["kind"] == "custom" and data["source_sha256"] == file_sha256(pairs)
    assert data["test_sha256"] == file_sha256(registered / "test_ab.json")
    _cache_random_vector(env, tiny_models["llama"], ANTHROPIC)  # extraction is tested elsewhere
    code, _out, err = _cli(env, capsys, monkeypatch, "eval", "-b", "greed", "-b",
                          ANTHROPIC, "-l", "1", "--mults", "0,1",
                          "--kinds", "hooks", "--tasks", "ab", "--limit", "2", "--model",
                          model, "--device", "cpu", "--run", "ev")  # fmt: skip
    assert code == 0, err
    results = json.loads((ws / "results" / "ev" / "results.json").read_text())
    assert set(results["behavior_data"]) == {"greed", ANTHROPIC}
    assert results["behavior_data"][ANTHROPIC]["kind"] == "anthropic"
    assert results["dataset_sha256"]["caa_ab_greed"] == file_sha256(registered / "test_ab.json")
    tasks = {t for v in results["variants"] for t in v["tasks"]}
    assert tasks == {"caa_ab_greed", f"caa_ab_{ANTHROPIC}"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["extract", "--dataset", "{tmp}/refusal.json"],
         "dataset name 'refusal' collides with the built-in behavior 'refusal'"),
        (["extract", "-b", "Sycophancy", "--dataset", "{pairs}"],
         "collides with the built-in behavior 'sycophancy'"),
        (["export", "-b", "my pairs", "--dataset", "{pairs}", "-l", "1", "--mult", "1"],
         "custom behavior name 'my pairs' must be 1-64 letters"),
        (["eval", "-b", "a/b", "--dataset", "{pairs}", "-l", "1"],
         "no spaces, dots or path separators"),
        (["sweep", "-b", "greed", "--dataset", "{pairs}", "--test-dataset", "{tmp}/tiny.json"],
         "has 3 item(s); a test split needs at least 10"),
        (["eval", "-b", "small", "--dataset", "{tmp}/tiny.json", "-l", "1"],
         "custom behavior 'small' has no test split (tiny.json has 3 pairs"),
        (["export", "-b", "ghost", "-l", "1", "--mult", "1"],
         "bake it with --vector {vectors}/llama/ghost.safetensors"),
        (["export", "-b", "nobody", "-l", "1", "--mult", "1"],
         "give its vector file with --vector FILE"),
        (["export", "-b", "x", "-l", "1", "--mult", "1", "--vector", "{tmp}/other.safetensors"],
         "was extracted from other-model (weights 000000000000), not from"),
        (["export", "-b", "refusal", "-l", "1", "--mult", "1", "--normalize-with", "refusl"],
         "unknown behavior 'refusl'"),
        (["finetune", "-b", "greed", "-d", "pos", "--test-dataset", "{pairs}"],
         "--test-dataset needs --dataset FILE"),
    ],
    ids=["stem-collides", "name-collides", "space", "separator", "tiny-test", "no-test-split",
         "vector-not-registered", "unknown", "other-model", "normalize-with", "test-alone"],
)  # fmt: skip
def test_bad_input_writes_nothing(
    args: list[str],
    message: str,
    env: dict[str, str],
    pairs: Path,
    tiny_models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vectors = Path(env["CAA_BAKE_VECTORS_DIR"])
    (tmp_path / "refusal.json").write_text(json.dumps(_items(4)))
    (tmp_path / "tiny.json").write_text(json.dumps(_items(3, "T")))
    ghost = SteeringVector({1: torch.ones(32)}, {"behavior": "ghost"})
    ghost.save(vectors / "llama" / "ghost.safetensors")
    other = SteeringVector({1: torch.ones(32)}, {"model_id": "other-model",
                                                 "weights_fingerprint": "0" * 64})  # fmt: skip
    other.save(tmp_path / "other.safetensors")
    before = files_under(Path(env["CAA_BAKE_HOME"]))

    def fill(text: str) -> str:
        return (
            text.replace("{tmp}", str(tmp_path))
            .replace("{pairs}", str(pairs))
            .replace("{vectors}", str(vectors))
        )

    args = [fill(a) for a in args]
    result = _cli(env, capsys, monkeypatch, *args, "--model", str(tiny_models["llama"]))
    assert_one_error(result, fill(message))
    assert files_under(Path(env["CAA_BAKE_HOME"])) == before
