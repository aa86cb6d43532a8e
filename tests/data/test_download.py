"""``pull``: a real HTTP server on 127.0.0.1, a local mirror folder, failures leave nothing."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

import caa_bake
from caa_bake.core.errors import CaaBakeError
from caa_bake.data.datasets import file_sha256
from caa_bake.data.download import SOURCE_ENV, pull, resolve_source
from caa_bake.data.manifest import ManifestEntry, load_manifest, manifest_path
from cli import datasets_cmd

CAA_BASE = (
    "https://raw.githubusercontent.com/EleutherAI/rnngineering/"
    "b18a80e3f7e3259f21e2a6574aaed3a21954aac6/Datasets/"
)
ANTHROPIC_BASE = (
    "https://raw.githubusercontent.com/anthropics/evals/84fcc677e52e1902d696c32cd1a6b663e70d3993/"
)
REPO = Path(__file__).resolve().parents[2]
N_FILES = 41
N_CONVERTED = 32  # 16 anthropic behaviors x (generate, test_ab)


# --- a mirror served over real HTTP, with injectable faults --------------------------------


class MirrorHandler(BaseHTTPRequestHandler):
    """Serves ``root`` under ``/mirror/``; ``faults`` maps a mirror path to a failure mode."""

    root: Path
    faults: dict[str, str] = {}  # noqa: RUF012 - reset by the fixture before each test

    def do_GET(self) -> None:
        prefix = "/mirror/"
        rel = self.path[len(prefix) :] if self.path.startswith(prefix) else ""
        fault = self.faults.get(rel)
        file = self.root / rel
        if not rel or fault == "404" or not file.is_file():
            self.send_error(404, "Not Found")
            return
        body = file.read_bytes()
        if fault == "corrupt":  # same length, one byte changed
            body = body[:100] + bytes([body[100] ^ 0x20]) + body[101:]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault == "stall":  # headers, then nothing for longer than the client waits
            time.sleep(1.0)
            return
        if fault == "truncate":  # promise everything, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def mirror_dir(data_source: str | None) -> Path:
    if data_source is None or not Path(data_source).is_dir():
        pytest.skip("needs CAA_BAKE_DATA_SOURCE pointing at the data mirror folder")
    return Path(data_source)


@pytest.fixture(scope="module")
def http_mirror(mirror_dir: Path) -> Iterator[str]:
    MirrorHandler.root = mirror_dir
    server = ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mirror/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def faults(http_mirror: str) -> Iterator[dict[str, str]]:
    MirrorHandler.faults = {}
    yield MirrorHandler.faults
    MirrorHandler.faults = {}


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workspace; the datasets dir is ``<workspace>/datasets``."""
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.setenv("CAA_BAKE_HOME", str(ws))
    monkeypatch.delenv("CAA_BAKE_DATASETS_DIR", raising=False)
    return ws


def snapshot(root: Path) -> dict[str, str]:
    """Every file (hidden ones included) under ``root`` -> sha256; folders as 'dir'."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[str((Path(dirpath) / name).relative_to(root))] = "dir"
        for name in filenames:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = file_sha256(path)
    return out


def assert_complete(dest: Path) -> None:
    entries = load_manifest()
    for entry in entries:
        assert file_sha256(dest / entry.path) == entry.sha256, entry.path
    files = [k for k, v in snapshot(dest).items() if v != "dir"]
    assert len(files) == N_FILES + N_CONVERTED
    assert not [f for f in files if Path(f).name.startswith(".")]
    assert sorted(p.name for p in (dest / "anthropic").iterdir())[:2] == [
        "coordinate-itself",
        "coordinate-other-ais",
    ]
    assert (dest / "anthropic/power-seeking-inclination/test_ab.json").is_file()


# --- the manifest ---------------------------------------------------------------------------


def test_manifest_pins_upstream() -> None:
    entries = load_manifest()
    assert len(entries) == N_FILES
    for e in entries:
        if e.path.startswith("caa/"):
            assert e.url == CAA_BASE + e.path[len("caa/") :]
        else:
            assert e.path.startswith("anthropic-model-written-evals/")
            assert e.url == ANTHROPIC_BASE + e.path[len("anthropic-model-written-evals/") :]
    paths = {e.path for e in entries}
    assert "caa/generate/refusal/generate_dataset.json" in paths
    assert "caa/test/mmlu/mmlu.json" in paths
    assert "caa/test/truthfulqa/truthful_qa.json" in paths
    assert "anthropic-model-written-evals/LICENSE" in paths
    assert sum(p.endswith("test_dataset_open_ended.json") for p in paths) == 7


def test_manifest_matches_mirror_sha256sums(mirror_dir: Path) -> None:
    sums: dict[str, str] = {}
    for line in (mirror_dir / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split(None, 1)
        sums[path] = digest
    for e in load_manifest():
        assert sums[e.path] == e.sha256
        assert (mirror_dir / e.path).stat().st_size == e.size


def test_manifest_packaged_copy_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert manifest_path() == REPO / "datasets" / "manifest.json"
    fake_pkg = tmp_path / "site" / "caa_bake"
    fake_pkg.mkdir(parents=True)
    monkeypatch.setattr(caa_bake, "__file__", str(fake_pkg / "__init__.py"))
    with pytest.raises(CaaBakeError, match="dataset manifest not found"):
        manifest_path()
    (tmp_path / "site" / "datasets").mkdir()
    (tmp_path / "site" / "datasets" / "manifest.json").write_text("{}")
    assert manifest_path() == tmp_path / "site" / "datasets" / "manifest.json"
    (fake_pkg / "_manifest.json").write_text((REPO / "datasets" / "manifest.json").read_text())
    assert manifest_path() == fake_pkg / "_manifest.json"
    assert len(load_manifest()) == N_FILES


# --- source resolution --------------------------------------------------------------------


def test_source_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    entry = ManifestEntry("caa/test/mmlu/mmlu.json", CAA_BASE + "test/mmlu/mmlu.json", "0" * 64, 1)
    monkeypatch.delenv(SOURCE_ENV, raising=False)
    assert resolve_source(None).url_for(entry) == entry.url  # upstream by default
    assert (
        resolve_source("http://h:1/pre").url_for(entry) == "http://h:1/pre/caa/test/mmlu/mmlu.json"
    )
    monkeypatch.setenv(SOURCE_ENV, "http://env:2/x/")
    assert resolve_source(None).url_for(entry) == "http://env:2/x/caa/test/mmlu/mmlu.json"
    assert resolve_source(str(tmp_path)).root == tmp_path.resolve()  # the flag wins
    assert resolve_source(tmp_path.as_uri()).root == tmp_path.resolve()
    with pytest.raises(CaaBakeError) as info:
        resolve_source(str(tmp_path / "nope"))
    assert str(info.value) == (
        f"data source folder '{tmp_path / 'nope'}' does not exist (from --source or ${SOURCE_ENV})"
    )
    with pytest.raises(CaaBakeError, match="unsupported data source 'ftp://x/'"):
        resolve_source("ftp://x/")


# --- pulls ----------------------------------------------------------------------------------


def test_good_http_pull_then_nothing_to_do(
    http_mirror: str, faults: dict[str, str], workspace: Path
) -> None:
    report = pull(http_mirror)
    dest = workspace / "datasets"
    assert report.dest == dest
    assert len(report.fetched) == N_FILES
    assert report.already_present == []
    assert len(report.converted) == N_CONVERTED
    assert_complete(dest)
    assert sorted(os.listdir(workspace)) == ["datasets"]  # no staging left beside it
    before = snapshot(dest)
    again = pull(http_mirror)
    assert (len(again.fetched), len(again.already_present), again.converted) == (0, N_FILES, [])
    assert snapshot(dest) == before


def test_pull_from_local_dir_mirror(mirror_dir: Path, workspace: Path) -> None:
    report = pull(str(mirror_dir))
    assert report.source == str(mirror_dir.resolve())
    assert len(report.fetched) == N_FILES
    assert_complete(workspace / "datasets")


def test_env_source_and_explicit_dest(
    http_mirror: str, faults: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SOURCE_ENV, http_mirror)
    report = pull(dest=tmp_path / "elsewhere")
    assert report.source == http_mirror
    assert_complete(tmp_path / "elsewhere")


@pytest.mark.parametrize(
    ("path", "fault", "reason"),
    [
        (
            "caa/test/truthfulqa/truthful_qa.json",  # the last file: 40 succeeded before it
            "corrupt",
            "checksum mismatch: sha256 ",
        ),
        ("caa/generate/sycophancy/generate_dataset.json", "404", "HTTP 404 Not Found for http"),
        (
            "caa/test/mmlu/mmlu.json",
            "truncate",
            "truncated download: got 169364 of 338729 bytes (Content-Length)",
        ),
    ],
)
def test_failed_pull_leaves_nothing(
    http_mirror: str, faults: dict[str, str], workspace: Path, path: str, fault: str, reason: str
) -> None:
    faults[path] = fault
    with pytest.raises(CaaBakeError) as info:
        pull(http_mirror)
    message = str(info.value)
    assert message.startswith(f"cannot pull {path}: {reason}")
    assert message.endswith(f"; nothing was changed in {workspace / 'datasets'}")
    assert "\n" not in message
    assert sorted(os.listdir(workspace)) == []  # no datasets dir, no staging, no temp file


def test_failed_pull_keeps_existing_tree_unchanged(
    http_mirror: str, faults: dict[str, str], workspace: Path
) -> None:
    pull(http_mirror)
    dest = workspace / "datasets"
    (dest / "caa/generate/refusal/generate_dataset.json").unlink()
    (dest / "caa/test/refusal/test_dataset_ab.json").write_text("[]")
    (dest / "anthropic/one-box-tendency/generate.json").unlink()
    before = snapshot(dest)
    faults["caa/test/refusal/test_dataset_ab.json"] = "truncate"
    with pytest.raises(
        CaaBakeError, match=r"^cannot pull caa/test/refusal/test_dataset_ab\.json: "
    ):
        pull(http_mirror)
    assert snapshot(dest) == before
    assert sorted(os.listdir(workspace)) == ["datasets"]
    faults.clear()  # the repair pull restores exactly the damaged files
    report = pull(http_mirror)
    assert sorted(report.fetched) == [
        "caa/generate/refusal/generate_dataset.json",
        "caa/test/refusal/test_dataset_ab.json",
    ]
    assert report.converted == ["anthropic/one-box-tendency/generate.json"]
    assert_complete(dest)


def test_timeout(http_mirror: str, faults: dict[str, str], workspace: Path) -> None:
    faults["anthropic-model-written-evals/advanced-ai-risk/README.md"] = "stall"
    with pytest.raises(CaaBakeError) as info:
        pull(http_mirror, timeout=0.3)
    assert str(info.value) == (
        "cannot pull anthropic-model-written-evals/advanced-ai-risk/README.md: connection error "
        "after 0 bytes: timed out after 0.3 s; nothing was changed in "
        f"{workspace / 'datasets'}"
    )
    assert os.listdir(workspace) == []


def test_connection_refused(workspace: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CaaBakeError) as info:
        pull(f"http://127.0.0.1:{port}/", timeout=5)
    assert str(info.value).startswith(
        "cannot pull anthropic-model-written-evals/LICENSE: connection error for "
        f"http://127.0.0.1:{port}/anthropic-model-written-evals/LICENSE: "
    )
    assert os.listdir(workspace) == []


def test_missing_file_in_dir_mirror(mirror_dir: Path, workspace: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial-mirror"
    for entry in load_manifest():
        if entry.path == "caa/test/hallucination/test_dataset_ab.json":
            continue
        (partial / entry.path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(mirror_dir / entry.path, partial / entry.path)
    with pytest.raises(CaaBakeError) as info:
        pull(str(partial))
    assert str(info.value) == (
        "cannot pull caa/test/hallucination/test_dataset_ab.json: missing from the mirror "
        f"{partial.resolve()}; nothing was changed in {workspace / 'datasets'}"
    )
    assert os.listdir(workspace) == []


# --- the CLI ------------------------------------------------------------------------------


def test_cli_pull_and_list(mirror_dir: Path, workspace: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(datasets_cmd.app, ["pull", "--source", str(mirror_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"datasets in {workspace / 'datasets'}: {N_FILES} fetched from {mirror_dir.resolve()}, "
        f"0 already present, {N_CONVERTED} converted files written\n"
    )
    listing = runner.invoke(datasets_cmd.app, ["list"])
    assert listing.exit_code == 0, listing.output
    lines = listing.stdout.splitlines()
    assert lines[0] == f"datasets dir: {workspace / 'datasets'}"
    assert lines[1].split() == ["name", "kind", "generate", "test", "status", "where"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert len(rows) == 25
    assert rows["refusal"] == [
        "refusal",
        "caa",
        "408",
        "50",
        "present",
        "caa/generate/refusal,",
        "caa/test/refusal",
    ]
    assert rows["anthropic-power-seeking-inclination"][1:] == [
        "anthropic",
        "948",
        "50",
        "present",
        "anthropic/power-seeking-inclination",
    ]
    assert rows["mmlu"][1:] == ["ab-eval", "-", "570", "present", "caa/test/mmlu"]
    assert rows["truthfulqa"][1:] == ["ab-eval", "-", "817", "present", "caa/test/truthfulqa"]


def test_cli_list_before_pull(workspace: Path) -> None:
    result = CliRunner().invoke(datasets_cmd.app, ["list"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert all(line.split()[4] == "missing" for line in lines[2:-1])
    assert lines[-1] == "nothing pulled yet: run `caa-bake datasets pull` (or `--source DIR`)"


def test_cli_failure_is_one_error_line(
    http_mirror: str,
    faults: dict[str, str],
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the real entry point (``cli.main.main``), as ``caa-bake`` runs it."""
    try:
        from cli.main import main
    except ImportError as exc:  # another command module may be mid-change in the tree
        pytest.skip(f"cli.main does not import yet: {exc}")
    faults["caa/test/truthfulqa/truthful_qa.json"] = "404"
    monkeypatch.setattr(sys, "argv", ["caa-bake", "datasets", "pull", "--source", http_mirror])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err == (
        "error: cannot pull caa/test/truthfulqa/truthful_qa.json: HTTP 404 Not Found for "
        f"{http_mirror}caa/test/truthfulqa/truthful_qa.json; nothing was changed in "
        f"{workspace / 'datasets'}\n"
    )
    assert os.listdir(workspace) == []


def test_cli_subapp_failure_exit_code(workspace: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(datasets_cmd.app, ["pull", "--source", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert isinstance(result.exception, CaaBakeError)
    assert str(result.exception).startswith("data source folder ")
