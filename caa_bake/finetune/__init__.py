"""The finetuning baseline: plan, DeepSpeed ranks, weights, the checkpoint and its card.

The public face of ``caa_bake.finetune``: other subpackages and the CLI import these names
from ``caa_bake.finetune``; its modules are internal to it. Names load on first use
(PEP 562), so importing the face costs no more than importing what is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caa_bake.finetune.card import render_finetune_card
    from caa_bake.finetune.config import (
        ZERO_STAGES,
        DeepSpeedConfig,
        resolve_ds_config,
        shipped_config_path,
    )
    from caa_bake.finetune.data import (
        Batch,
        TrainExample,
        build_examples,
        collate,
        global_schedule,
        rank_schedule,
        target_letters,
    )
    from caa_bake.finetune.launch import (
        RankCrashed,
        free_port,
        launch_ranks,
        rank_env,
    )
    from caa_bake.finetune.listing import (
        FinetunedCheckpoint,
        list_finetuned,
        read_finetune_block,
    )
    from caa_bake.finetune.log import (
        LOG_DIR,
        RankLog,
        StepRecord,
        TrainingSummary,
        read_rank_logs,
        summarize,
    )
    from caa_bake.finetune.plan import (
        FinetunePlan,
        FinetuneRequest,
        cpu_count,
        finetune_name,
        plan_finetune,
    )
    from caa_bake.finetune.run import (
        FINETUNE_FORMAT,
        FINETUNE_KIND,
        FinetuneResult,
        finalize_checkpoint,
        launched_externally,
        provenance,
        run_external_rank,
        run_finetune,
    )
    from caa_bake.finetune.spec import (
        DIRECTIONS,
        OPTIMIZERS,
        Direction,
        FinetuneSpec,
        LoraSettings,
        Optimizer,
        check_direction,
        check_optimizer,
        variant_parts,
    )
    from caa_bake.finetune.weights import (
        TOKENIZER_FILES,
        build_model,
        copy_tokenizer_files,
        gathered_state,
        save_checkpoint,
        state_sha256,
    )
    from caa_bake.finetune.worker import (
        ERROR_FILE,
        EXAMPLES_FILE,
        JOB_FILE,
        LAUNCHER_PID_ENV,
        PROGRESS_FILE,
        import_deepspeed,
        load_examples,
        main,
        run_rank,
        save_examples,
    )

__all__ = [
    "DIRECTIONS",
    "ERROR_FILE",
    "EXAMPLES_FILE",
    "FINETUNE_FORMAT",
    "FINETUNE_KIND",
    "JOB_FILE",
    "LAUNCHER_PID_ENV",
    "LOG_DIR",
    "OPTIMIZERS",
    "PROGRESS_FILE",
    "TOKENIZER_FILES",
    "ZERO_STAGES",
    "Batch",
    "DeepSpeedConfig",
    "Direction",
    "FinetunePlan",
    "FinetuneRequest",
    "FinetuneResult",
    "FinetuneSpec",
    "FinetunedCheckpoint",
    "LoraSettings",
    "Optimizer",
    "RankCrashed",
    "RankLog",
    "StepRecord",
    "TrainExample",
    "TrainingSummary",
    "build_examples",
    "build_model",
    "check_direction",
    "check_optimizer",
    "collate",
    "copy_tokenizer_files",
    "cpu_count",
    "finalize_checkpoint",
    "finetune_name",
    "free_port",
    "gathered_state",
    "global_schedule",
    "import_deepspeed",
    "launch_ranks",
    "launched_externally",
    "list_finetuned",
    "load_examples",
    "main",
    "plan_finetune",
    "provenance",
    "rank_env",
    "rank_schedule",
    "read_finetune_block",
    "read_rank_logs",
    "render_finetune_card",
    "resolve_ds_config",
    "run_external_rank",
    "run_finetune",
    "run_rank",
    "save_checkpoint",
    "save_examples",
    "shipped_config_path",
    "state_sha256",
    "summarize",
    "target_letters",
    "variant_parts",
]

_SOURCES = {
    "Batch": "data",
    "DIRECTIONS": "spec",
    "DeepSpeedConfig": "config",
    "Direction": "spec",
    "ERROR_FILE": "worker",
    "EXAMPLES_FILE": "worker",
    "FINETUNE_FORMAT": "run",
    "FINETUNE_KIND": "run",
    "FinetunePlan": "plan",
    "FinetuneRequest": "plan",
    "FinetuneResult": "run",
    "FinetuneSpec": "spec",
    "FinetunedCheckpoint": "listing",
    "JOB_FILE": "worker",
    "LAUNCHER_PID_ENV": "worker",
    "LOG_DIR": "log",
    "LoraSettings": "spec",
    "OPTIMIZERS": "spec",
    "Optimizer": "spec",
    "PROGRESS_FILE": "worker",
    "RankCrashed": "launch",
    "RankLog": "log",
    "StepRecord": "log",
    "TOKENIZER_FILES": "weights",
    "TrainExample": "data",
    "TrainingSummary": "log",
    "ZERO_STAGES": "config",
    "build_examples": "data",
    "build_model": "weights",
    "check_direction": "spec",
    "check_optimizer": "spec",
    "collate": "data",
    "copy_tokenizer_files": "weights",
    "cpu_count": "plan",
    "finalize_checkpoint": "run",
    "finetune_name": "plan",
    "free_port": "launch",
    "gathered_state": "weights",
    "global_schedule": "data",
    "import_deepspeed": "worker",
    "launch_ranks": "launch",
    "launched_externally": "run",
    "list_finetuned": "listing",
    "load_examples": "worker",
    "main": "worker",
    "plan_finetune": "plan",
    "provenance": "run",
    "rank_env": "launch",
    "rank_schedule": "data",
    "read_finetune_block": "listing",
    "read_rank_logs": "log",
    "render_finetune_card": "card",
    "resolve_ds_config": "config",
    "run_external_rank": "run",
    "run_finetune": "run",
    "run_rank": "worker",
    "save_checkpoint": "weights",
    "save_examples": "worker",
    "shipped_config_path": "config",
    "state_sha256": "weights",
    "summarize": "log",
    "target_letters": "data",
    "variant_parts": "spec",
}


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
