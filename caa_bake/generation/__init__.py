"""Open-ended generation and judging (``caa-bake generate`` / ``judge``): answers from the
unbaked and baked models with any sampler, in process or through an OpenAI-compatible
server, scored 0-10 by a judge model like the paper's Table 4.

The public face of ``caa_bake.generation``: the CLI imports these names from
``caa_bake.generation``; its modules are internal to it. Names load on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from caa_bake.core import lazy_exports

if TYPE_CHECKING:
    from caa_bake.generation.client import (
        API_KEY_ENVS,
        ChatReply,
        Endpoint,
        EndpointError,
        Retry,
        normalize_url,
    )
    from caa_bake.generation.generate import (
        GENERATIONS,
        GenerateJob,
        GenerateResult,
        WorkItem,
        run_generate_job,
    )
    from caa_bake.generation.judge import SCORES, JudgeJob, JudgeResult, run_judge_job
    from caa_bake.generation.local import Completion, LocalGenerator
    from caa_bake.generation.local_run import run_local
    from caa_bake.generation.report import (
        PAPER_TABLE4,
        Cell,
        aggregate,
        render_table,
        write_report,
    )
    from caa_bake.generation.rubrics import RUBRICS, SYSTEM_PROMPT, judge_messages, parse_score
    from caa_bake.generation.runs import RowFile, read_rows, resolve_run, run_folder, write_json
    from caa_bake.generation.settings import Sampler, fmt_mult, parse_mults, settings_digest

__all__ = [
    "API_KEY_ENVS",
    "GENERATIONS",
    "PAPER_TABLE4",
    "RUBRICS",
    "SCORES",
    "SYSTEM_PROMPT",
    "Cell",
    "ChatReply",
    "Completion",
    "Endpoint",
    "EndpointError",
    "GenerateJob",
    "GenerateResult",
    "JudgeJob",
    "JudgeResult",
    "LocalGenerator",
    "Retry",
    "RowFile",
    "Sampler",
    "WorkItem",
    "aggregate",
    "fmt_mult",
    "judge_messages",
    "normalize_url",
    "parse_mults",
    "parse_score",
    "read_rows",
    "render_table",
    "resolve_run",
    "run_folder",
    "run_generate_job",
    "run_judge_job",
    "run_local",
    "settings_digest",
    "write_json",
    "write_report",
]

_SOURCES = {
    "API_KEY_ENVS": "client",
    "ChatReply": "client",
    "Endpoint": "client",
    "EndpointError": "client",
    "Retry": "client",
    "normalize_url": "client",
    "GENERATIONS": "generate",
    "GenerateJob": "generate",
    "GenerateResult": "generate",
    "WorkItem": "generate",
    "run_generate_job": "generate",
    "SCORES": "judge",
    "JudgeJob": "judge",
    "JudgeResult": "judge",
    "run_judge_job": "judge",
    "Completion": "local",
    "LocalGenerator": "local",
    "run_local": "local_run",
    "PAPER_TABLE4": "report",
    "Cell": "report",
    "aggregate": "report",
    "render_table": "report",
    "write_report": "report",
    "RUBRICS": "rubrics",
    "SYSTEM_PROMPT": "rubrics",
    "judge_messages": "rubrics",
    "parse_score": "rubrics",
    "RowFile": "runs",
    "read_rows": "runs",
    "resolve_run": "runs",
    "run_folder": "runs",
    "write_json": "runs",
    "Sampler": "settings",
    "fmt_mult": "settings",
    "parse_mults": "settings",
    "settings_digest": "settings",
}

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES, globals(), __all__)
