"""One rank of a finetuning run: ``python -m caa_bake.finetune.worker --workdir W --checkpoint C``.

``caa-bake finetune`` starts one of these per rank with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. ``W`` holds ``job.json`` (the
:class:`~caa_bake.finetune.spec.FinetuneSpec`) and ``examples.json`` (encoded prompts and
targets); the rank writes its progress (rank 0) and any user-facing error there. ``C`` is
the checkpoint's temporary folder: rank 0 saves the model into it and every rank writes
its :class:`~caa_bake.finetune.log.RankLog` there.

Each rank: joins the process group through DeepSpeed (gloo on CPU, nccl on GPUs), loads
the base model (plus a LoRA adapter), wraps it with ``deepspeed.initialize`` and a torch
optimizer, trains on its slice of every global step (see :mod:`caa_bake.finetune.data`),
gathers the full weights, hashes them, and (rank 0) saves them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from caa_bake.core import CaaBakeError
from caa_bake.finetune.data import TrainExample, collate, global_schedule, rank_schedule
from caa_bake.finetune.log import RankLog, StepRecord
from caa_bake.finetune.spec import FinetuneSpec
from caa_bake.finetune.weights import build_model, gathered_state, save_checkpoint, state_sha256

__all__ = [
    "ERROR_FILE",
    "EXAMPLES_FILE",
    "JOB_FILE",
    "LAUNCHER_PID_ENV",
    "PROGRESS_FILE",
    "import_deepspeed",
    "load_examples",
    "main",
    "run_rank",
    "save_examples",
]

JOB_FILE = "job.json"
EXAMPLES_FILE = "examples.json"
PROGRESS_FILE = "progress"
ERROR_FILE = "error-rank{rank}.txt"
#: set by the launcher to its own pid (see ``_die_with_launcher``)
LAUNCHER_PID_ENV = "CAA_BAKE_LAUNCHER_PID"


def save_examples(examples: Sequence[TrainExample], path: Path) -> None:
    """Write encoded examples for the ranks (compact JSON)."""
    rows = [[e.index, list(e.input_ids), e.target_id] for e in examples]
    Path(path).write_text(json.dumps(rows, separators=(",", ":")), encoding="utf-8")


def load_examples(path: Path) -> list[TrainExample]:
    """Read :func:`save_examples` output."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    return [TrainExample(int(i), tuple(int(t) for t in ids), int(y)) for i, ids, y in rows]


def import_deepspeed(device: str) -> Any:
    """Import deepspeed quietly; on CPU skip the shared-memory comm op (a ~45 s JIT build
    that only speeds up CPU inference all-reduce)."""
    try:
        deepspeed = importlib.import_module("deepspeed")
    except ImportError:
        raise CaaBakeError("finetuning needs deepspeed: pip install 'caa-bake[finetune]'") from None
    if device == "cpu":
        comm: Any = importlib.import_module("deepspeed.comm.torch")
        comm.build_shm_op = lambda: None
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    return deepspeed


def _env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise CaaBakeError(f"{name} is not set: start ranks with `caa-bake finetune`")
        return default
    return int(value)


def _device(spec: FinetuneSpec, local_rank: int) -> torch.device:
    if spec.device == "cpu":
        torch.set_num_threads(spec.threads_per_rank)
        return torch.device("cpu")
    if not torch.cuda.is_available() or torch.cuda.device_count() <= local_rank:
        raise CaaBakeError(f"rank with LOCAL_RANK={local_rank} has no GPU")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _optimizer(spec: FinetuneSpec, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.learning_rate)
    return torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=0.0)


def _forward_kwargs(module: Any) -> dict[str, Any]:
    """Compute logits for the last position only when the model supports it."""
    import inspect

    base = module.get_base_model() if hasattr(module, "get_base_model") else module
    params = inspect.signature(base.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


def _engine(spec: FinetuneSpec, device: torch.device) -> Any:
    """Join the process group and wrap the model and a torch optimizer with DeepSpeed."""
    deepspeed = import_deepspeed(spec.device)
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=spec.backend, verbose=False)
    torch.manual_seed(spec.seed)
    model: Any = build_model(spec)
    model.to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=_optimizer(spec, params), config=dict(spec.ds_config)
    )
    return engine


def _train(
    engine: Any,
    examples: Sequence[TrainExample],
    schedule: Sequence[Sequence[int]],
    device: torch.device,
    log: RankLog,
    on_step: Callable[[int, int, float], None] | None,
) -> None:
    """One optimizer step per entry of ``schedule`` (this rank's item indices)."""
    forward_kwargs = _forward_kwargs(engine.module)
    for step, indices in enumerate(schedule):
        batch = collate([examples[i] for i in indices], pad_id=0)
        out = engine(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            position_ids=batch.position_ids.to(device),
            use_cache=False,
            **forward_kwargs,
        )
        loss = F.cross_entropy(out.logits[:, -1, :].float(), batch.targets.to(device))
        engine.backward(loss)
        engine.step()
        value = float(loss.detach())
        log.steps.append(StepRecord(step, list(batch.indices), value))
        if on_step is not None:
            on_step(step + 1, len(schedule), value)


def run_rank(
    spec: FinetuneSpec,
    examples: Sequence[TrainExample],
    checkpoint: Path,
    *,
    on_step: Callable[[int, int, float], None] | None = None,
) -> RankLog:
    """Train this rank (see the module docstring) and return its log (also written to disk).

    ``on_step(step, total, loss)`` is called on every rank after each step.
    """
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    if world != spec.world_size:
        raise CaaBakeError(f"WORLD_SIZE is {world} but the job was planned for {spec.world_size}")
    start = time.perf_counter()
    device = _device(spec, _env_int("LOCAL_RANK", rank))
    engine = _engine(spec, device)
    steps = global_schedule(
        len(examples),
        world_size=world,
        batch_size=spec.batch_size,
        epochs=spec.epochs,
        seed=spec.seed,
    )
    log = RankLog(rank, world, str(device), torch.get_num_threads())
    log.init_seconds = time.perf_counter() - start
    start = time.perf_counter()
    _train(
        engine,
        examples,
        rank_schedule(steps[: spec.max_steps], rank, spec.batch_size),
        device,
        log,
        on_step,
    )
    log.train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    state = gathered_state(engine.module, spec.zero_stage)
    log.weights_sha256 = state_sha256(state)
    if rank == 0:
        log.saved_sha256 = save_checkpoint(spec, state, checkpoint)
    log.save_seconds = time.perf_counter() - start
    del state
    log.write(checkpoint)
    torch.distributed.barrier()
    return log


def _progress_writer(workdir: Path, rank: int) -> Callable[[int, int, float], None] | None:
    """Rank 0 reports ``step total loss`` in ``workdir/progress`` for the launcher."""
    if rank != 0:
        return None
    path = workdir / PROGRESS_FILE

    def write(step: int, total: int, loss: float) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{step} {total} {loss:.6f}\n", encoding="utf-8")
        os.replace(tmp, path)

    return write


def _die_with_launcher() -> None:
    """Ask Linux to SIGTERM this rank when the ``caa-bake finetune`` process that started it
    dies (even by SIGKILL), so no orphaned rank trains on."""
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if launcher is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(launcher):  # it died before the request took effect
        sys.exit(128 + signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of one rank; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m caa_bake.finetune.worker")
    parser.add_argument("--workdir", type=Path, required=True, help="folder with job.json")
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint temp folder")
    args = parser.parse_args(argv)
    _die_with_launcher()
    rank = _env_int("RANK", 0)
    try:
        spec = FinetuneSpec.load(args.workdir / JOB_FILE)
        examples = load_examples(args.workdir / EXAMPLES_FILE)
        run_rank(spec, examples, args.checkpoint, on_step=_progress_writer(args.workdir, rank))
    except CaaBakeError as exc:
        (args.workdir / ERROR_FILE.format(rank=rank)).write_text(f"{exc}\n", encoding="utf-8")
        print(f"error: {exc}", file=sys.stderr)
        return 3
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
