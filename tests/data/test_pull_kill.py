"""``kill -9`` during ``caa-bake datasets pull``: the next pull removes the staging folder.

A real ``datasets pull`` subprocess fetches from a real HTTP server on 127.0.0.1 that
serves the data mirror but stalls on the third file, so the pull sits with a half-filled
staging folder. A second pull while it is alive must leave that folder alone; once it is
SIGKILLed, the next pull removes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tiny_models import tree_digest

from caa_bake.data.download import pull
from caa_bake.data.manifest import load_manifest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")

ROOT = Path(__file__).resolve().parents[2]


class StallingMirror(BaseHTTPRequestHandler):
    """Serves ``root``; the request for ``stall_on`` hangs until ``release`` is set."""

    root: Path
    stall_on = ""
    release = threading.Event()

    def do_GET(self) -> None:
        rel = self.path.lstrip("/")
        if rel == self.stall_on:
            self.release.wait(timeout=600)
            return
        file = self.root / rel
        if not file.is_file():
            self.send_error(404, "Not Found")
            return
        body = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def mirror(data_source: str | None) -> Path:
    if data_source is None or not Path(data_source).is_dir():
        pytest.skip("needs CAA_BAKE_DATA_SOURCE pointing at the data mirror folder")
    return Path(data_source)


@pytest.fixture()
def stalling_url(mirror: Path) -> Iterator[str]:
    StallingMirror.root = mirror
    StallingMirror.stall_on = load_manifest()[2].path
    StallingMirror.release.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), StallingMirror)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        StallingMirror.release.set()
        server.shutdown()
        server.server_close()


def _staging(ws: Path) -> list[Path]:
    return [p for p in ws.glob(".datasets.tmp-*") if p.is_dir()]


def test_a_killed_pull_is_cleaned_by_the_next_and_a_live_one_is_not(
    stalling_url: str, mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "ws"
    env = {**os.environ, "CAA_BAKE_HOME": str(ws), "PYTHONPATH": str(ROOT), "CAA_BAKE_QUIET": "1"}
    env.pop("CAA_BAKE_DATASETS_DIR", None)
    env.pop("CAA_BAKE_DATA_SOURCE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "datasets", "pull", "--source", stalling_url],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not any(any(p.rglob("*.json*")) for p in _staging(ws)):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the pull never staged a file: {proc.communicate()[1]}")
            time.sleep(0.05)
        [staging] = _staging(ws)
        before = tree_digest(staging)

        dest = ws / "datasets"
        pull(str(mirror), dest)  # while the stalled pull is alive
        assert capsys.readouterr().err == ""
        assert tree_digest(staging) == before, "a live pull's staging folder was touched"

        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    complete = tree_digest(dest)
    report = pull(str(mirror), dest)  # nothing to fetch, but it writes beside the same place
    assert report.fetched == []
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"caa-bake: removed 1 stale temporary beside {ws} (")
    assert err[0].endswith(f"left by killed runs (pid {proc.pid})")
    assert sorted(p.name for p in ws.iterdir()) == ["datasets"]
    assert tree_digest(dest) == complete
