"""``caa_bake.models.hub``: hub-id and weight-file rules, and downloads from a local fake Hub.

The fake Hub is a small HTTP server on 127.0.0.1 that answers the few endpoints
``huggingface_hub.snapshot_download`` uses (repo info, tree listing, resolve). huggingface_hub
reads ``HF_ENDPOINT`` / ``HF_HOME`` / ``HF_HUB_OFFLINE`` at import time, so every download
runs in a fresh subprocess pointed at the server and at a temporary cache.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from huggingface_hub.utils import are_progress_bars_disabled
from transformers.utils import logging as tf_logging

from caa_bake.models.hub import looks_like_hub_id, quiet_hf_progress, weights_kind

# the module itself: ``caa_bake.core.progress`` as an attribute is the function of that name
progress_mod = importlib.import_module("caa_bake.core.progress")

COMMIT = "c0ffee" + "0" * 34
SAFETENSORS = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "  # an empty safetensors file
REPOS: dict[str, dict[str, bytes]] = {
    "owner/safe": {
        "config.json": b'{"model_type": "llama"}',
        "model.safetensors": SAFETENSORS,
        "tokenizer.json": b"{}",
        "chat_template.jinja": b"{{ messages }}",
        "pytorch_model.bin": b"pickle bytes",
        "optimizer.pt": b"pickle bytes",
        "notes.md": b"not needed",
    },
    "owner/pickle": {"config.json": b"{}", "pytorch_model.bin": b"pickle bytes"},
    "owner/config-only": {"config.json": b"{}", "README.md": b"# nothing"},
}
GATED = "owner/gated"


def test_hub_ids() -> None:
    for good in ("gpt2", "meta-llama/Llama-2-7b-chat-hf", "a.b_c-d/E.f", "HuggingFaceTB/SmolLM2"):
        assert looks_like_hub_id(good), good
    for bad in (
        "",
        "./model",
        "/abs/path",
        "a/b/c",
        "owner/../x",
        "owner/repo.git",
        "-lead/x",
        "owner/.hidden",
        "has space",
        "owner/",
        "~/models/x",
    ):
        assert not looks_like_hub_id(bad), bad


@pytest.mark.parametrize(
    ("names", "kind"),
    [
        (["config.json", "model.safetensors"], "safetensors"),
        (["model-00001-of-00002.safetensors", "pytorch_model.bin"], "safetensors"),
        (["sub/dir/model.safetensors"], "safetensors"),
        (["pytorch_model.bin"], "pickle"),
        (["pytorch_model-00001-of-00002.bin"], "pickle"),
        (["model.bin"], "pickle"),
        (["weights.pt"], "pickle"),
        (["original/consolidated.pth"], "pickle"),
        (["config.json", "tokenizer.json", "training_args.bin"], "none"),
        ([], "none"),
    ],
)
def test_weights_kind(names: list[str], kind: str) -> None:
    assert weights_kind(names) == kind
    assert weights_kind(iter(names)) == kind  # any iterable, read once


@pytest.fixture
def hf_bars_restored() -> Iterator[None]:
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    hub_disabled = are_progress_bars_disabled()
    tf_enabled = tf_logging.is_progress_bar_enabled()
    quiet = progress_mod._quiet
    yield
    progress_mod._quiet = quiet
    (disable_progress_bars if hub_disabled else enable_progress_bars)()
    (tf_logging.enable_progress_bar if tf_enabled else tf_logging.disable_progress_bar)()


def test_quiet_hf_progress_hides_bars_then_restores_them(
    monkeypatch: pytest.MonkeyPatch, hf_bars_restored: None
) -> None:
    from huggingface_hub.utils import enable_progress_bars

    enable_progress_bars()
    tf_logging.enable_progress_bar()
    monkeypatch.setenv("CAA_BAKE_QUIET", "1")
    with quiet_hf_progress():
        assert are_progress_bars_disabled()
        assert not tf_logging.is_progress_bar_enabled()
    assert not are_progress_bars_disabled()
    assert tf_logging.is_progress_bar_enabled()


def test_quiet_hf_progress_leaves_bars_alone_when_not_quiet(
    monkeypatch: pytest.MonkeyPatch, hf_bars_restored: None
) -> None:
    from huggingface_hub.utils import enable_progress_bars

    enable_progress_bars()
    tf_logging.enable_progress_bar()
    monkeypatch.delenv("CAA_BAKE_QUIET", raising=False)
    progress_mod._quiet = False
    with quiet_hf_progress():
        assert not are_progress_bars_disabled()
        assert tf_logging.is_progress_bar_enabled()


# ---- downloads from a fake Hub on 127.0.0.1 ------------------------------------------------


@dataclass
class FakeHub:
    """The running server: its URL and the paths it was asked for."""

    url: str
    requests: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, format: str, *args: Any) -> None:
        self.hub.requests.append(f"{self.command} {self.path}")

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: object) -> None:
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _error(self, code: int, error_code: str) -> None:
        body = json.dumps({"error": error_code}).encode()
        self._send(code, body, {"X-Error-Code": error_code, "Content-Type": "application/json"})

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        parts = unquote(urlparse(self.path).path).strip("/").split("/")
        api = parts[:2] == ["api", "models"]
        repo = "/".join(parts[2:4] if api else parts[:2])
        if repo == GATED:
            return self._error(403, "GatedRepo")
        if repo not in REPOS:
            return self._error(404, "RepoNotFound")
        files = REPOS[repo]
        if api and parts[4:5] == ["revision"]:
            if parts[5] not in ("main", COMMIT):
                return self._error(404, "RevisionNotFound")
            return self._json({"id": repo, "sha": COMMIT})
        if api and parts[4:5] == ["tree"]:
            return self._json(
                [
                    {"type": "file", "path": name, "size": len(body), "oid": _sha1(body)}
                    for name, body in files.items()
                ]
            )
        if not api and parts[2:3] == ["resolve"]:
            body = files.get("/".join(parts[4:]))
            if body is None:
                return self._error(404, "EntryNotFound")
            return self._send(200, body, {"X-Repo-Commit": COMMIT, "ETag": f'"{_sha1(body)}"'})
        return self._error(404, "RepoNotFound")


def _sha1(body: bytes) -> str:
    return hashlib.sha1(body).hexdigest()


@pytest.fixture(scope="module")
def fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub("")
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hub
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


_SCRIPT = """
import json, sys
from caa_bake.core.errors import CaaBakeError
from caa_bake.models.hub import download_snapshot

for repo, revision, allow_pickle in json.loads(sys.argv[1]):
    try:
        folder, commit = download_snapshot(repo, revision=revision, allow_pickle=allow_pickle)
        files = {p.name: p.read_bytes().decode("latin-1") for p in sorted(folder.iterdir())}
        print(json.dumps({"folder": str(folder), "commit": commit, "files": files}))
    except CaaBakeError as exc:
        print(json.dumps({"error": str(exc)}))
"""


def _download(
    hub: FakeHub, home: Path, calls: list[tuple[str, str | None, bool]], *, offline: bool = False
) -> list[dict[str, Any]]:
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(home),
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "CAA_BAKE_QUIET": "0",  # quiet would import transformers (slow) to silence its bars
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
    for key in ("HF_HUB_CACHE", "HF_TOKEN", "HUGGINGFACE_HUB_CACHE"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(calls)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(calls), proc.stdout + proc.stderr
    return [json.loads(line) for line in lines]


def test_download_fetches_only_the_safe_files_then_works_offline(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    home = tmp_path / "hf"
    (online,) = _download(fake_hub, home, [("owner/safe", None, False)])
    assert online["commit"] == COMMIT
    folder = Path(online["folder"])
    assert folder.name == COMMIT and folder.is_relative_to(home)
    # safetensors, json, tokenizer and chat template files; no pickle or unrelated files
    assert sorted(online["files"]) == [
        "chat_template.jinja",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    for name, text in online["files"].items():
        assert text.encode("latin-1") == REPOS["owner/safe"][name]
    assert not any("pytorch_model.bin" in r or "optimizer.pt" in r for r in fake_hub.requests)

    # offline, the HF cache answers: same folder, no request reaches the server
    before = len(fake_hub.requests)
    (cached,) = _download(fake_hub, home, [("owner/safe", None, False)], offline=True)
    assert cached == online
    assert len(fake_hub.requests) == before


def test_download_errors_are_one_clear_line_and_allow_pickle(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    results = _download(
        fake_hub,
        tmp_path / "hf",
        [
            ("owner/pickle", None, False),
            ("owner/config-only", None, False),
            ("owner/missing", None, False),
            ("owner/safe", "no-such-branch", False),
            (GATED, None, False),
            ("owner/config-only", None, True),
            ("owner/pickle", None, True),
        ],
    )
    errors = [r.get("error", "") for r in results[:-1]]
    assert errors[0] == (
        "'owner/pickle' has only pickle weights; rerun with --allow-pickle to load them "
        "(pickle can run code)"
    )
    assert errors[1] == "'owner/config-only' has no model weights (*.safetensors or *.bin)"
    assert errors[2].startswith(
        "'owner/missing' is not a local folder and was not found on the Hugging Face Hub"
    )
    assert errors[3] == "revision 'no-such-branch' of 'owner/safe' not found on the Hub"
    assert errors[4].startswith("'owner/gated' is gated on the Hugging Face Hub")
    assert errors[5] == errors[1]
    assert all(e and "\n" not in e for e in errors)
    # rerun with allow_pickle: the .bin weights are downloaded
    pickled = results[-1]
    assert pickled["commit"] == COMMIT
    assert sorted(pickled["files"]) == ["config.json", "pytorch_model.bin"]
    assert pickled["files"]["pytorch_model.bin"] == "pickle bytes"


def test_offline_without_a_cached_copy(fake_hub: FakeHub, tmp_path: Path) -> None:
    (result,) = _download(fake_hub, tmp_path / "hf", [("owner/safe", None, False)], offline=True)
    assert result["error"] == (
        "cannot download 'owner/safe': offline mode is on and it is not in the local Hugging "
        "Face cache; set HF_HUB_OFFLINE=0 / check network, or pass a local model folder"
    )
