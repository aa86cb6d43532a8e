"""lm-eval tasks in process, caa-bake eval and sweep, their tables and plots.

The public face of ``caa_bake.evaluation``: other subpackages and the CLI import these names
from ``caa_bake.evaluation``; its modules are internal to it. Names load on first use
(PEP 562), so importing the face costs no more than importing what is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caa_bake.evaluation.common import (
        LoadedModel,
        PartialLog,
        check_behaviors,
        check_limit,
        load_for_eval,
        make_lm,
        parse_multipliers,
        prepare_run_dir,
        provenance,
        tasks_sha256,
    )
    from caa_bake.evaluation.evaluate import (
        EvalRun,
        VariantResult,
        run_eval_job,
    )
    from caa_bake.evaluation.plots import (
        plot_eval,
        plot_sweep,
    )
    from caa_bake.evaluation.reference_hooks import (
        steer_from_tail,
        steering_tail,
        tail_starts,
    )
    from caa_bake.evaluation.report import (
        write_eval_report,
        write_sweep_report,
    )
    from caa_bake.evaluation.sweep import (
        POSITIONS,
        SweepJob,
        SweepRun,
        run_sweep_job,
    )
    from caa_bake.evaluation.tables import (
        KIND_LABELS,
        PAPER_LLAMA2_7B,
        Lookup,
        Row,
        SweepPoint,
        Table,
        best_layers,
        eval_markdown,
        eval_tables,
        finetuning_table,
        fmt_mult,
        paper_comparison,
        steered_methods,
        sweep_markdown,
        write_csv,
    )
    from caa_bake.evaluation.tasks import (
        CAPABILITY_TASKS,
        GROUPS,
        TASKS_ENV,
        PromptSetup,
        SampleValue,
        TaskResult,
        ab_task,
        all_tasks,
        check_task_data,
        primary_metric,
        prompt_setup,
        quiet_lm_eval,
        resolve_tasks,
        run_tasks,
        task_behavior,
        tasks_dir,
    )
    from caa_bake.evaluation.variants import (
        STEERED_KINDS,
        EvalJob,
        PreparedModel,
        Status,
        Variant,
        ensure_export,
        find_finetuned,
        plan_variants,
        prepared_model,
        vector_of,
    )

__all__ = [
    "CAPABILITY_TASKS",
    "GROUPS",
    "KIND_LABELS",
    "PAPER_LLAMA2_7B",
    "POSITIONS",
    "STEERED_KINDS",
    "TASKS_ENV",
    "EvalJob",
    "EvalRun",
    "LoadedModel",
    "Lookup",
    "PartialLog",
    "PreparedModel",
    "PromptSetup",
    "Row",
    "SampleValue",
    "Status",
    "SweepJob",
    "SweepPoint",
    "SweepRun",
    "Table",
    "TaskResult",
    "Variant",
    "VariantResult",
    "ab_task",
    "all_tasks",
    "best_layers",
    "check_behaviors",
    "check_limit",
    "check_task_data",
    "ensure_export",
    "eval_markdown",
    "eval_tables",
    "find_finetuned",
    "finetuning_table",
    "fmt_mult",
    "load_for_eval",
    "make_lm",
    "paper_comparison",
    "parse_multipliers",
    "plan_variants",
    "plot_eval",
    "plot_sweep",
    "prepare_run_dir",
    "prepared_model",
    "primary_metric",
    "prompt_setup",
    "provenance",
    "quiet_lm_eval",
    "resolve_tasks",
    "run_eval_job",
    "run_sweep_job",
    "run_tasks",
    "steer_from_tail",
    "steered_methods",
    "steering_tail",
    "sweep_markdown",
    "tail_starts",
    "task_behavior",
    "tasks_dir",
    "tasks_sha256",
    "vector_of",
    "write_csv",
    "write_eval_report",
    "write_sweep_report",
]

_SOURCES = {
    "CAPABILITY_TASKS": "tasks",
    "EvalJob": "variants",
    "EvalRun": "evaluate",
    "GROUPS": "tasks",
    "KIND_LABELS": "tables",
    "LoadedModel": "common",
    "Lookup": "tables",
    "PAPER_LLAMA2_7B": "tables",
    "POSITIONS": "sweep",
    "PartialLog": "common",
    "PreparedModel": "variants",
    "PromptSetup": "tasks",
    "Row": "tables",
    "STEERED_KINDS": "variants",
    "SampleValue": "tasks",
    "Status": "variants",
    "SweepJob": "sweep",
    "SweepPoint": "tables",
    "SweepRun": "sweep",
    "TASKS_ENV": "tasks",
    "Table": "tables",
    "TaskResult": "tasks",
    "Variant": "variants",
    "VariantResult": "evaluate",
    "ab_task": "tasks",
    "all_tasks": "tasks",
    "best_layers": "tables",
    "check_behaviors": "common",
    "check_limit": "common",
    "check_task_data": "tasks",
    "ensure_export": "variants",
    "eval_markdown": "tables",
    "eval_tables": "tables",
    "find_finetuned": "variants",
    "finetuning_table": "tables",
    "fmt_mult": "tables",
    "load_for_eval": "common",
    "make_lm": "common",
    "paper_comparison": "tables",
    "parse_multipliers": "common",
    "plan_variants": "variants",
    "plot_eval": "plots",
    "plot_sweep": "plots",
    "prepare_run_dir": "common",
    "prepared_model": "variants",
    "primary_metric": "tasks",
    "prompt_setup": "tasks",
    "provenance": "common",
    "quiet_lm_eval": "tasks",
    "resolve_tasks": "tasks",
    "run_eval_job": "evaluate",
    "run_sweep_job": "sweep",
    "run_tasks": "tasks",
    "steer_from_tail": "reference_hooks",
    "steered_methods": "tables",
    "steering_tail": "reference_hooks",
    "sweep_markdown": "tables",
    "tail_starts": "reference_hooks",
    "task_behavior": "tasks",
    "tasks_dir": "tasks",
    "tasks_sha256": "common",
    "vector_of": "variants",
    "write_csv": "tables",
    "write_eval_report": "report",
    "write_sweep_report": "report",
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
