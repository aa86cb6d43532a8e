"""A small client for OpenAI-compatible servers (llama.cpp's server, vLLM, Ollama, OpenAI).

Only two calls are used: ``GET /models`` (is the server up, does it serve this model) and
``POST /chat/completions``. Connection failures, timeouts, 429 and 5xx answers are retried
with exponential backoff (a ``Retry-After`` header is honoured); other HTTP errors fail at
once. Requests are spaced by a rate limit. The API key comes from an environment variable and
is sent only as the ``Authorization`` header: it never appears in an error or a record.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from caa_bake.core import CaaBakeError

__all__ = ["API_KEY_ENVS", "ChatReply", "Endpoint", "EndpointError", "Retry", "normalize_url"]

API_KEY_ENVS = ("CAA_BAKE_API_KEY", "OPENAI_API_KEY")
_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class EndpointError(CaaBakeError):
    """The endpoint failed (after retries, where retrying made sense)."""


@dataclass(frozen=True)
class Retry:
    """``tries`` attempts in all; waits ``backoff``, 2x``backoff``, ... (capped) between them."""

    tries: int = 5
    backoff: float = 1.0
    max_wait: float = 30.0

    def wait(self, attempt: int, hint: float | None = None) -> float:
        base = self.backoff * (2 ** (attempt - 1))
        return min(self.max_wait, max(base, hint or 0.0))


@dataclass(frozen=True)
class ChatReply:
    text: str
    finish_reason: str | None
    model: str | None  # the model name the server answered with


def normalize_url(url: str) -> str:
    """``http://host:8080`` -> ``http://host:8080/v1``; a URL with a path is kept as given."""
    url = url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CaaBakeError(f"--endpoint '{url}' is not an http(s) URL (e.g. http://127.0.0.1:8080)")
    for suffix in ("/chat/completions", "/completions"):
        if parts.path.endswith(suffix):
            url = url[: -len(suffix)]
            break
    path = urllib.parse.urlsplit(url).path
    return url if path not in ("", "/") else f"{url}/v1"


def _is_local(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _server_message(body: bytes) -> str:
    """The first line of an error body: its ``error.message`` / ``detail`` if JSON."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data.get("detail"))
        if isinstance(err, dict):
            err = err.get("message", err)
        if isinstance(err, list) and err and isinstance(err[0], dict):
            err = err[0].get("msg", err[0])
        if err is not None:
            text = str(err)
    line = text.splitlines()[0] if text else ""
    return line[:300]


@dataclass
class Endpoint:
    """An OpenAI-compatible server at ``url`` (its ``/v1`` base)."""

    url: str
    api_key_env: Sequence[str] = API_KEY_ENVS
    timeout: float = 300.0
    retry: Retry = field(default_factory=Retry)
    min_interval: float = 0.0  # seconds between request starts (the rate limit)
    on_retry: Callable[[str], None] | None = None
    _last: float = field(default=0.0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.url = normalize_url(self.url)
        self._key = next((os.environ[n] for n in self.api_key_env if os.environ.get(n)), None)
        if self._key is None and not _is_local(self.url):
            names = " or ".join(self.api_key_env)
            raise CaaBakeError(
                f"{self.url} is not on this machine and no API key is set: export {names}"
            )

    @property
    def local(self) -> bool:
        return _is_local(self.url)

    # ---- requests ------------------------------------------------------------------------

    def _pace(self) -> None:
        with self._lock:
            delay = self._last + self.min_interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._last = time.monotonic()

    def _once(self, method: str, path: str, payload: dict[str, Any] | None) -> Any:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self._key:
            request.add_header("Authorization", f"Bearer {self._key}")
        self._pace()
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            body = response.read()
        try:
            return json.loads(body)
        except ValueError:
            raise EndpointError(
                f"{self.url}{path} answered with something that is not JSON"
            ) from None

    def request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        """One call with retries; raises :class:`EndpointError` with one clear line."""
        where = f"{self.url}{path}"
        for attempt in range(1, self.retry.tries + 1):
            hint: float | None = None
            try:
                return self._once(method, path, payload)
            except urllib.error.HTTPError as err:
                message = _server_message(err.read() or b"")
                problem = f"HTTP {err.code}" + (f": {message}" if message else "")
                if err.code not in _RETRY_STATUS:
                    raise EndpointError(f"{where} failed: {problem}") from None
                retry_after = err.headers.get("Retry-After") if err.headers else None
                hint = float(retry_after) if retry_after and retry_after.isdigit() else None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
                reason = getattr(err, "reason", err)
                problem = f"cannot reach the server ({reason})"
            if attempt == self.retry.tries:
                raise EndpointError(
                    f"{where}: {problem} (gave up after {attempt} tries; finished rows are kept)"
                )
            wait = self.retry.wait(attempt, hint)
            if self.on_retry is not None:
                self.on_retry(f"{where}: {problem}; retrying in {wait:.1f} s")
            time.sleep(wait)
        raise AssertionError("unreachable")

    # ---- the two calls -------------------------------------------------------------------

    def models(self) -> list[str] | None:
        """Model names the server lists, or None when it has no ``/models`` route."""
        try:
            data = self.request("GET", "/models")
        except EndpointError as err:
            if "HTTP 404" in str(err) or "HTTP 405" in str(err):
                return None
            raise
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            return None
        return [str(item.get("id")) for item in items if isinstance(item, dict)]

    def check_model(self, name: str, flag: str = "--endpoint-model") -> list[str] | None:
        """Fail with one line unless the server is up and lists ``name`` (when it lists any)."""
        served = self.models()
        if served is not None and name not in served:
            listed = ", ".join(served[:5]) + (" ..." if len(served) > 5 else "")
            raise EndpointError(
                f"{self.url} does not serve a model named '{name}' ({flag}); it serves: "
                f"{listed or 'nothing'}"
            )
        return served

    def chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        temperature: float,
        max_tokens: int,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ChatReply:
        """One chat completion (``n`` = 1); ``extra`` adds server-specific fields."""
        payload: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "stream": False,
        }
        if top_p is not None:
            payload["top_p"] = top_p
        if top_k:
            payload["top_k"] = top_k  # llama.cpp / vLLM / Ollama extension
        if seed is not None:
            payload["seed"] = seed
        payload.update(extra or {})
        data = self.request("POST", "/chat/completions", payload)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise EndpointError(
                f"{self.url}/chat/completions answered without choices[0].message.content"
            ) from None
        return ChatReply(
            text=text if isinstance(text, str) else "",
            finish_reason=choice.get("finish_reason"),
            model=data.get("model") if isinstance(data, dict) else None,
        )
