"""The finetuning baseline of CAA: ``caa-bake finetune`` as one library call.

Supervised finetuning on a behavior's generate split, as in the CAA paper: the prompt is
the question as the user turn with the assistant turn prefilled with ``(``, and the loss is
the cross-entropy of the single next token against the matching answer letter (``pos``) or
the non-matching one (``neg``). Data parallel with DeepSpeed ZeRO (stage 2 by default) on
N CPU ranks (gloo) or N GPUs (nccl).

Flow of :func:`run_finetune`: validate everything (:mod:`caa_bake.finetune.plan`), open a
temporary folder beside the output (:func:`caa_bake.core.atomic.atomic_dir`), start the ranks
(:mod:`caa_bake.finetune.launch`; each runs :mod:`caa_bake.finetune.worker`), then check
the result (ranks agree, the checkpoint loads in stock transformers with no missing or
unexpected keys and holds exactly the trained weights), add the ``caa_bake`` provenance
block and the model card, and rename the folder into place. Any failure leaves nothing at
the output path.

:func:`run_external_rank` is the same run when ranks are started by ``deepspeed`` or
``torchrun`` instead (every rank runs ``caa-bake finetune``; rank 0 owns the output).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from caa_bake import __version__
from caa_bake.core import CaaBakeError, atomic_dir, default_mode
from caa_bake.finetune.card import render_finetune_card
from caa_bake.finetune.log import TrainingSummary, read_rank_logs, summarize
from caa_bake.finetune.plan import FinetunePlan, FinetuneRequest, plan_finetune
from caa_bake.finetune.spec import FinetuneSpec

__all__ = [
    "FINETUNE_FORMAT",
    "FINETUNE_KIND",
    "FinetuneResult",
    "finalize_checkpoint",
    "launched_externally",
    "provenance",
    "run_external_rank",
    "run_finetune",
]

FINETUNE_KIND = "finetune"
FINETUNE_FORMAT = 1
Status = Callable[[str], None]


@dataclass(frozen=True)
class FinetuneResult:
    """A finished run: the checkpoint and its numbers."""

    path: Path
    spec: FinetuneSpec
    summary: TrainingSummary
    wall_seconds: float

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        s, spec = self.summary, self.spec
        k = max(1, min(10, s.steps // 4))
        first, last = sum(s.losses[:k]) / k, sum(s.losses[-k:]) / k
        return [
            f"trained {s.steps} steps x {spec.world_size} rank(s) x batch {spec.batch_size} "
            f"({s.samples} samples) on {spec.device}, ZeRO-{spec.zero_stage}, "
            f"{spec.optimizer} lr {spec.learning_rate:g}"
            + (", LoRA (merged)" if spec.lora else ""),
            f"loss: mean of first {k} steps {first:.4f} -> last {k} steps {last:.4f}",
            f"time: start-up {s.init_seconds:.1f} s, training {s.train_seconds:.1f} s "
            f"({s.samples_per_second:.2f} samples/s), total {self.wall_seconds:.1f} s",
        ]


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in ("torch", "transformers", "deepspeed", "peft"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def provenance(spec: FinetuneSpec, summary: TrainingSummary, wall_seconds: float) -> dict[str, Any]:
    """The ``caa_bake`` block written to the checkpoint's ``config.json``."""
    base_keys = (
        "model_id",
        "revision",
        "path",
        "weights_fingerprint",
        "model_type",
        "architectures",
    )
    return {
        "kind": FINETUNE_KIND,
        "format": FINETUNE_FORMAT,
        "tool": f"caa-bake {__version__}",
        "base": {key: spec.base.get(key) for key in base_keys},
        "behavior": spec.behavior,
        "direction": spec.direction,
        "target": spec.target,
        "objective": "cross-entropy of the next token after the prefilled '(' against the "
        "target answer letter",
        "data": {
            **spec.data,
            "split": "generate",
            "prompt_style": spec.prompt_style,
            "letters": spec.letters,
        },
        "hyperparameters": {
            "epochs": spec.epochs,
            "learning_rate": spec.learning_rate,
            "optimizer": spec.optimizer,
            "weight_decay": 0.0,
            "per_device_batch_size": spec.batch_size,
            "global_batch_size": spec.batch_size * spec.world_size,
            "seed": spec.seed,
            "max_steps": spec.max_steps,
            "training_dtype": "float32",
            "lora": asdict(spec.lora) if spec.lora is not None else None,
        },
        "distributed": {
            "world_size": spec.world_size,
            "device": spec.device,
            "backend": spec.backend,
            "launcher": spec.launcher,
            "threads_per_rank": spec.threads_per_rank if spec.device == "cpu" else None,
            "zero_stage": spec.zero_stage,
            "deepspeed_config_source": spec.ds_config_source,
            "deepspeed_config": spec.ds_config,
        },
        "training": {**summary.record(), "wall_seconds": round(wall_seconds, 3)},
        "versions": _versions(),
    }


def _check_loads(folder: Path, expected_sha256: str | None) -> None:
    """Reload with stock transformers: no missing/unexpected keys, exactly the trained weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from caa_bake.finetune.weights import state_sha256
    from caa_bake.models import quiet_hf_progress

    with quiet_hf_progress():
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=torch.float32, output_loading_info=True
        )
    model, info = loaded
    problems = {k: v for k, v in info.items() if k != "error_msgs" and v}
    if problems or info.get("error_msgs"):
        raise CaaBakeError(f"the saved checkpoint does not reload cleanly: {problems or info}")
    if expected_sha256 is None or state_sha256(model.state_dict()) != expected_sha256:
        raise CaaBakeError("the saved checkpoint's weights differ from the trained weights")


def finalize_checkpoint(spec: FinetuneSpec, folder: Path, started: float) -> TrainingSummary:
    """Check the ranks' results in ``folder``; add the provenance block and the model card."""
    logs = read_rank_logs(folder, spec.world_size)
    summary = summarize(logs)
    _check_loads(folder, summary.saved_sha256)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["caa_bake"] = provenance(spec, summary, time.perf_counter() - started)
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    name = Path(spec.out).name
    (folder / "README.md").write_text(render_finetune_card(name, config), encoding="utf-8")
    for path in folder.rglob("*"):
        path.chmod(default_mode(directory=path.is_dir()))
    return summary


@contextlib.contextmanager
def _sigterm_raises(target: Path) -> Iterator[None]:
    """While training, turn SIGTERM into a CaaBakeError so the ranks are stopped and the
    temporary folders removed (in the main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: object) -> None:
        raise CaaBakeError(f"terminated (SIGTERM); nothing was written to {target}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_error(target: Path, exc: OSError) -> CaaBakeError:
    """One line for a failure to write the output (it appeared meanwhile, disk full, ...)."""
    if isinstance(exc, FileExistsError):
        return CaaBakeError(f"{target} appeared while finetuning; pass --force to replace it")
    return CaaBakeError(f"writing {target} failed: {exc.strerror or exc}")


def run_finetune(request: FinetuneRequest, *, status: Status) -> FinetuneResult:
    """Validate, train on ``cpu_ranks`` / ``gpus`` spawned ranks, and write the checkpoint."""
    from caa_bake.finetune.launch import RankCrashed, launch_ranks
    from caa_bake.finetune.worker import EXAMPLES_FILE, JOB_FILE, save_examples

    started = time.perf_counter()
    plan = plan_finetune(request)
    spec = plan.spec
    status(
        f"finetuning {spec.base['model_id']} on {spec.behavior} ({spec.direction}): "
        f"{len(plan.examples)} items, {spec.world_size} {spec.device} rank(s), "
        f"ZeRO-{spec.zero_stage}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="caa-bake-finetune-"))
    keep_workdir = False
    try:
        with _sigterm_raises(plan.target):
            spec.save(workdir / JOB_FILE)
            save_examples(plan.examples, workdir / EXAMPLES_FILE)
            with atomic_dir(plan.target, overwrite=request.force) as tmp:
                tmp.chmod(default_mode(directory=True))
                launch_ranks(spec, workdir, tmp)
                status("checking the checkpoint (reload in transformers) ...")
                summary = finalize_checkpoint(spec, tmp, started)
    except RankCrashed:
        keep_workdir = True  # the message points at the rank's log in it
        raise
    except OSError as exc:
        raise _write_error(plan.target, exc) from None
    finally:
        if not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return FinetuneResult(plan.target, spec, summary, time.perf_counter() - started)


def launched_externally() -> bool:
    """True when this process is one rank started by ``deepspeed`` / ``torchrun``."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def _sigterm_exits() -> None:
    """Turn the launcher's SIGTERM into SystemExit, so rank 0 removes its temporary folder."""

    def handler(signum: int, _frame: object) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _external_train(plan: FinetunePlan, folder: Path, status: Status) -> None:
    from caa_bake.finetune.worker import run_rank

    def report(step: int, total: int, loss: float) -> None:
        if step == total or step % max(1, total // 10) == 0:
            status(f"step {step}/{total} loss {loss:.4f}")

    run_rank(plan.spec, plan.examples, folder, on_step=report)


def run_external_rank(request: FinetuneRequest, *, status: Status) -> FinetuneResult | None:
    """Run this process as one rank of an externally launched job (rank 0 returns the result).

    Every rank validates the request the same way; rank 0 opens the temporary output folder
    and tells the others where it is.
    """
    import torch

    from caa_bake.finetune.worker import import_deepspeed

    started = time.perf_counter()
    plan = plan_finetune(request, external_world=int(os.environ["WORLD_SIZE"]))
    spec, rank = plan.spec, int(os.environ["RANK"])
    if spec.device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import_deepspeed(spec.device).init_distributed(dist_backend=spec.backend, verbose=False)
    _sigterm_exits()
    try:
        if rank != 0:
            where: list[Any] = [None]
            torch.distributed.broadcast_object_list(where, src=0)
            _external_train(plan, Path(where[0]), lambda _line: None)
            return None
        try:
            with atomic_dir(plan.target, overwrite=request.force) as tmp:
                tmp.chmod(default_mode(directory=True))
                torch.distributed.broadcast_object_list([str(tmp)], src=0)
                _external_train(plan, tmp, status)
                summary = finalize_checkpoint(spec, tmp, started)
        except OSError as exc:
            raise _write_error(plan.target, exc) from None
        return FinetuneResult(plan.target, spec, summary, time.perf_counter() - started)
    finally:
        torch.distributed.destroy_process_group()
