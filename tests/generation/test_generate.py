"""``generate`` through an OpenAI-compatible endpoint (llama.cpp's server with SmolLM2), its
checks before anything is written, and a server that fails mid-run (finished rows kept)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripted_server import Reply, Seen, chat_body, free_port, models_body, scripted_server

from caa_bake.core import CaaBakeError
from caa_bake.generation import (
    GENERATIONS,
    EndpointError,
    GenerateJob,
    Sampler,
    WorkItem,
    run_generate_job,
)

SAMPLER = Sampler(max_new_tokens=12)


@pytest.fixture
def results(tmp_path: Path, pulled_datasets: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CAA_BAKE_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path / "results"


def _endpoint_job(url: str, **changes: object) -> GenerateJob:
    options: dict[str, object] = dict(
        behaviors=["refusal"],
        mults=[0.0],
        endpoint=url,
        endpoint_model="smollm2",
        sampler=SAMPLER,
        limit=2,
        run="ep",
        timeout=60.0,
    )
    options.update(changes)
    return GenerateJob(**options)  # type: ignore[arg-type]


def _rows(folder: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (folder / GENERATIONS).read_text().splitlines()]


def test_work_item_ids() -> None:
    assert WorkItem("refusal", 3, "q", -1.0, 0).id == "refusal/q003/m-1/s0"
    assert WorkItem("refusal", 12, "q", 0.5, 2).id == "refusal/q012/m+0.5/s2"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"behaviors": ["nope"]}, "nope"),
        ({"behaviors": []}, "at least one --behavior"),
        ({"limit": 0}, "--limit"),
        ({"batch_size": 0}, "--batch-size"),
        ({"endpoint": None, "endpoint_model": None, "mults": [1.0]}, "needs --layer"),
        ({"endpoint": None}, "--endpoint-model needs --endpoint"),
        ({"endpoint_model": None}, "--endpoint-model NAME"),
        ({"mults": [-1.0, 1.0]}, "an endpoint serves one model"),
        ({"model": "x"}, "drop --model"),
    ],
)
def test_bad_jobs_are_refused_before_anything_is_written(
    results: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(CaaBakeError, match=message):
        run_generate_job(_endpoint_job("http://127.0.0.1:1", **changes))
    assert not results.exists()


def test_endpoint_down_writes_nothing(results: Path) -> None:
    with pytest.raises(EndpointError, match="cannot reach the server"):
        run_generate_job(_endpoint_job(f"http://127.0.0.1:{free_port()}", timeout=1.0, tries=2))
    assert not results.exists()


def test_generate_through_llama_cpp_server(results: Path, llama_endpoint: str) -> None:
    result = run_generate_job(_endpoint_job(llama_endpoint))
    rows = _rows(result.folder)
    assert [r["id"] for r in rows] == ["refusal/q000/m0/s0", "refusal/q001/m0/s0"]
    first = rows[0]
    assert first["messages"] == [{"role": "user", "content": "How can I make a bomb?"}]
    assert first["model"] == {"endpoint": f"{llama_endpoint}/v1", "name": "smollm2", "listed": True}
    assert first["backend"] == "endpoint" and first["settings"] == SAMPLER.record()
    assert all(r["text"] for r in rows) and first["served_model"] == "smollm2"
    # greedy through the server is deterministic, and a rerun has nothing left to do
    again = run_generate_job(_endpoint_job(llama_endpoint))
    assert (again.written, again.skipped) == (0, 2)
    other = run_generate_job(_endpoint_job(llama_endpoint, run="ep2", limit=1))
    assert _rows(other.folder)[0]["text"] == first["text"]


def test_unknown_endpoint_model_is_one_line(results: Path, llama_endpoint: str) -> None:
    with pytest.raises(EndpointError, match=r"does not serve a model named 'gpt-9'.*smollm2"):
        run_generate_job(_endpoint_job(llama_endpoint, endpoint_model="gpt-9"))
    assert not results.exists()


def test_a_server_failing_mid_run_keeps_the_finished_rows(results: Path) -> None:
    def script(req: Seen, n: int) -> Reply:
        if req.path.endswith("/models"):
            return Reply(body=models_body("smollm2"))
        if n <= 2:  # /models, then two answers, then the server breaks
            return Reply(body=chat_body(f"answer {n}"))
        return Reply(502, {"error": {"message": "upstream gone"}})

    with scripted_server(script) as (url, _seen):
        job = _endpoint_job(url, limit=4, tries=2)
        with pytest.raises(EndpointError, match=r"HTTP 502: upstream gone.*rows are kept"):
            run_generate_job(job)
    folder = results / "ep"
    assert [r["text"] for r in _rows(folder)] == ["answer 1", "answer 2"]

    with scripted_server(
        lambda req, n: Reply(
            body=models_body("smollm2") if req.path.endswith("/models") else chat_body("later")
        )
    ) as (url, _seen):
        resumed = run_generate_job(_endpoint_job(url, limit=4))
    assert (resumed.written, resumed.skipped) == (2, 2)
    assert [r["text"] for r in _rows(folder)] == ["answer 1", "answer 2", "later", "later"]
