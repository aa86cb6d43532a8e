"""llama.cpp's OpenAI-compatible server (llama-cpp-python's ``llama_cpp.server``) serving the
embedded SmolLM2 Q4_1 GGUF on 127.0.0.1: the real server that the generate / judge tests
talk to. Started once per session, bounded in time, stopped at the end."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ALIAS = "smollm2"
START_TIMEOUT_S = 90.0


@contextmanager
def llama_server(gguf: Path, port: int, log: Path) -> Iterator[str]:
    """Serve ``gguf`` as model ``smollm2`` on ``127.0.0.1:port``; yields the base URL."""
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        "2",
        "--verbose",
        "False",
    ]
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"llama_cpp.server exited ({proc.returncode}): {log.read_text()[-2000:]}"
                    )
                try:
                    with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"llama_cpp.server did not answer within {START_TIMEOUT_S} s"
                    )
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
