"""The OpenAI-compatible client against real HTTP servers on 127.0.0.1: retries, errors,
rate limit, API key handling (the llama.cpp server itself: tests/generation/test_generate.py)."""

from __future__ import annotations

import time

import pytest
from scripted_server import Reply, Seen, chat_body, free_port, models_body, scripted_server

from caa_bake.core import CaaBakeError
from caa_bake.generation.client import Endpoint, EndpointError, Retry, normalize_url

FAST = Retry(tries=3, backoff=0.01, max_wait=0.05)


def test_normalize_url() -> None:
    assert normalize_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080/v1"
    assert normalize_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080/v1"
    assert normalize_url("http://h:1/v1/") == "http://h:1/v1"
    assert normalize_url("http://h:1/v1/chat/completions") == "http://h:1/v1"
    assert normalize_url("https://api.example.com/openai/v1") == "https://api.example.com/openai/v1"
    with pytest.raises(CaaBakeError, match="not an http"):
        normalize_url("127.0.0.1:8080")


def test_chat_sends_the_settings_and_reads_the_reply() -> None:
    with scripted_server(lambda req, n: Reply(body=chat_body("hello", "m1"))) as (url, seen):
        ep = Endpoint(url, retry=FAST)
        reply = ep.chat(
            "m1",
            [{"role": "user", "content": "hi"}],
            temperature=0.5,
            max_tokens=7,
            top_p=0.9,
            top_k=40,
            seed=3,
            extra={"repeat_penalty": 1.0},
        )
    assert (reply.text, reply.finish_reason, reply.model) == ("hello", "stop", "m1")
    assert seen[0].path == "/v1/chat/completions" and seen[0].method == "POST"
    assert seen[0].body == {
        "model": "m1",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.5,
        "max_tokens": 7,
        "stream": False,
        "top_p": 0.9,
        "top_k": 40,
        "seed": 3,
        "repeat_penalty": 1.0,
    }
    assert "authorization" not in seen[0].headers  # no key set, local server


def test_retries_5xx_and_429_then_succeeds() -> None:
    statuses = [503, 429, 200]

    def script(req: Seen, n: int) -> Reply:
        code = statuses[n]
        return Reply(code, chat_body("ok") if code == 200 else {"error": {"message": "busy"}})

    retried: list[str] = []
    with scripted_server(script) as (url, seen):
        ep = Endpoint(url, retry=FAST, on_retry=retried.append)
        assert ep.chat("m", [], temperature=0, max_tokens=1).text == "ok"
    assert len(seen) == 3
    assert "HTTP 503: busy" in retried[0] and "HTTP 429: busy" in retried[1]


def test_gives_up_after_the_tries_with_one_line() -> None:
    with scripted_server(lambda req, n: Reply(500, {"detail": "boom"})) as (url, seen):
        ep = Endpoint(url, retry=FAST)
        with pytest.raises(EndpointError) as info:
            ep.chat("m", [], temperature=0, max_tokens=1)
    assert len(seen) == 3
    message = str(info.value)
    assert "\n" not in message
    assert "HTTP 500: boom" in message and "gave up after 3 tries" in message


def test_client_errors_are_not_retried() -> None:
    body = {"error": {"message": "The model `nope` does not exist.", "type": "invalid"}}
    with (
        scripted_server(lambda req, n: Reply(404, body)) as (url, seen),
        pytest.raises(EndpointError, match="HTTP 404: The model `nope` does not exist"),
    ):
        Endpoint(url, retry=FAST).chat("nope", [], temperature=0, max_tokens=1)
    assert len(seen) == 1


def test_server_down_is_one_line_after_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EndpointError, match=r"cannot reach the server .*gave up after 3 tries"):
        Endpoint(url, retry=FAST).models()


def test_check_model_lists_what_the_server_serves() -> None:
    with scripted_server(lambda req, n: Reply(body=models_body("a", "b"))) as (url, _seen):
        ep = Endpoint(url, retry=FAST)
        assert ep.check_model("a") == ["a", "b"]
        with pytest.raises(EndpointError, match=r"does not serve a model named 'c' .*serves: a, b"):
            ep.check_model("c", "--judge-model")
    # a server without /models: the name is checked by the first real request instead
    with scripted_server(lambda req, n: Reply(404, {"detail": "Not Found"})) as (url, _seen):
        assert Endpoint(url, retry=FAST).check_model("anything") is None


def test_rate_limit_spaces_requests() -> None:
    with scripted_server(lambda req, n: Reply(body=models_body("a"))) as (url, seen):
        ep = Endpoint(url, retry=FAST, min_interval=0.2)
        started = time.monotonic()
        for _ in range(3):
            ep.models()
        elapsed = time.monotonic() - started
    assert len(seen) == 3 and elapsed >= 0.4  # two waits of 0.2 s between three requests


def test_api_key_from_the_environment_is_sent_and_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("CAA_BAKE_API_KEY", raising=False)
    with pytest.raises(CaaBakeError, match="no API key is set: export CAA_BAKE_API_KEY or"):
        Endpoint("https://api.example.com")
    secret = "sk-test-1234567890"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    assert Endpoint("https://api.example.com").url == "https://api.example.com/v1"
    assert secret not in repr(Endpoint("https://api.example.com"))
    with (
        scripted_server(lambda req, n: Reply(401, {"error": {"message": "bad key"}})) as (
            url,
            seen,
        ),
        pytest.raises(EndpointError) as info,
    ):
        Endpoint(url, retry=FAST).models()
    assert seen[0].headers["authorization"] == f"Bearer {secret}"
    assert "HTTP 401: bad key" in str(info.value) and secret not in str(info.value)
