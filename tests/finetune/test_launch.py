"""``caa_bake.finetune.launch.rank_env``: the environment every rank is started with.

(The ranks themselves run in tests/finetune/test_distributed.py.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import caa_bake
from caa_bake.finetune.launch import free_port, rank_env
from caa_bake.finetune.spec import FinetuneSpec

CHECKOUT = Path(caa_bake.__file__).resolve().parents[1]


def _spec(**changes: Any) -> FinetuneSpec:
    fields: dict[str, Any] = {
        "behavior": "refusal",
        "direction": "pos",
        "base": {},
        "data": {},
        "prompt_style": "chat-template",
        "letters": {"A": 1, "B": 2},
        "epochs": 1,
        "learning_rate": 1e-4,
        "optimizer": "sgd",
        "batch_size": 1,
        "world_size": 2,
        "device": "cpu",
        "zero_stage": 2,
        "ds_config": {},
        "ds_config_source": "test",
        "out": "unused",
        "threads_per_rank": 3,
    }
    return FinetuneSpec(**{**fields, **changes})


def test_cpu_rank_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = rank_env(_spec(), 1, 29555)
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"]) == (
        "1",
        "1",
        "2",
        "2",
    )
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("127.0.0.1", "29555")
    assert env["CAA_BAKE_LAUNCHER_PID"] == str(os.getpid())
    assert (env["DS_ACCELERATOR"], env["CUDA_VISIBLE_DEVICES"]) == ("cpu", "")
    assert env["OMP_NUM_THREADS"] == "3"
    assert env["PYTHONPATH"].split(os.pathsep)[-1] == "/elsewhere"
    assert os.environ.get("RANK") is None  # the launcher's own environment is untouched


def test_gpu_ranks_keep_the_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    env = rank_env(_spec(device="cuda"), 0, 29556)
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "DS_ACCELERATOR" not in env or env["DS_ACCELERATOR"] == os.environ.get("DS_ACCELERATOR")


def test_ranks_can_import_caa_bake_from_the_checkout() -> None:
    first = Path(rank_env(_spec(), 0, 29557)["PYTHONPATH"].split(os.pathsep)[0])
    assert first == CHECKOUT
    assert (first / "caa_bake" / "__init__.py").is_file()


def test_free_port_is_a_bindable_port() -> None:
    import socket

    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
