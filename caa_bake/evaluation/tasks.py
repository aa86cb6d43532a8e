"""The caa-bake lm-eval tasks (``eval_tasks/``): names, checks, and running them on a model.

Task names: ``caa_ab_<behavior>`` for every behavior: the 7 CAA ones and the 16
``anthropic-*`` ones have a YAML of their own; a registered custom behavior runs the generic
task ``caa_ab_custom`` with the metadata ``custom_behavior: <name>`` (its results are
reported under ``caa_ab_<name>``). Then ``caa_mmlu``, ``caa_truthfulqa``; groups ``caa_ab``
(the 7 CAA behaviors), ``caa_ab_anthropic`` (the 16) and ``caa`` (the 7, MMLU and
TruthfulQA). :func:`run_tasks` evaluates
leaf tasks on an lm-eval ``LM`` (usually an ``HFLM`` built on a model object, so forward
hooks on it are honoured) and returns each task's metrics and per-doc values.

The prompt follows :func:`caa_bake.models.prompts.detect_style`: models with a chat template run
with ``apply_chat_template`` (the question is the user turn, ``(`` prefilled in the assistant
turn); Llama-2 chat models get the reference ``[INST] q [/INST] (`` format verbatim; other
models the ``plain`` format. The task metadata ``prompt_style`` selects the doc text.

The answer format follows :func:`caa_bake.models.prompts.answer_format`: ``split`` tokenizers
get ``(`` prefilled and ``A`` / ``B`` scored; ``merged`` ones (a single ``(A`` token: Qwen2)
nothing prefilled and ``(A`` / ``(B`` scored. It is passed to the tasks as the
``answer_format`` metadata (stock lm-eval detects the same from the model's tokenizer).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caa_bake.core import CaaBakeError, datasets_dir
from caa_bake.data import (
    ANTHROPIC_BEHAVIORS,
    CAA_BEHAVIORS,
    all_behaviors,
    check_behavior,
    is_custom,
    load_ab_eval,
    load_pairs,
)
from caa_bake.models import (
    AnswerFormat,
    PromptStyle,
    answer_format,
    detect_style,
    letter_token_ids,
)

if TYPE_CHECKING:
    from lm_eval.api.model import LM
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "CAPABILITY_TASKS",
    "CUSTOM_TASK",
    "GROUPS",
    "TASKS_ENV",
    "PromptSetup",
    "SampleValue",
    "TaskResult",
    "ab_task",
    "all_tasks",
    "check_task_data",
    "primary_metric",
    "prompt_setup",
    "quiet_lm_eval",
    "resolve_tasks",
    "run_tasks",
    "task_behavior",
    "tasks_dir",
]

#: overrides where the task YAMLs are (default: ``eval_tasks/`` beside the package)
TASKS_ENV = "CAA_BAKE_EVAL_TASKS"
#: capability task -> name of its A/B eval in :mod:`caa_bake.data.datasets`
CAPABILITY_TASKS: dict[str, str] = {"caa_mmlu": "mmlu", "caa_truthfulqa": "truthfulqa"}
_AB_PREFIX = "caa_ab_"
#: the generic task of a registered custom behavior (metadata ``custom_behavior``)
CUSTOM_TASK = "caa_ab_custom"
#: groups and the short aliases ``--tasks`` accepts (``ab`` = each behavior's own task)
GROUPS = ("caa", "caa_ab", "caa_ab_anthropic")
_ALIASES = {"mmlu": "caa_mmlu", "truthfulqa": "caa_truthfulqa"}


def ab_task(behavior: str) -> str:
    """``refusal`` -> ``caa_ab_refusal``."""
    return f"{_AB_PREFIX}{behavior}"


def all_tasks() -> list[str]:
    """Every leaf task of the task folder: the 7 CAA behavior tasks, MMLU and TruthfulQA,
    the 16 Anthropic behavior tasks and the generic custom task."""
    return [
        *(ab_task(b) for b in CAA_BEHAVIORS),
        *CAPABILITY_TASKS,
        *(ab_task(b) for b in ANTHROPIC_BEHAVIORS),
        CUSTOM_TASK,
    ]


def _known_tasks() -> list[str]:
    """Leaf tasks ``--tasks`` may name: every behavior's (custom ones too), MMLU, TruthfulQA."""
    return [ab_task(b) for b in all_behaviors()] + list(CAPABILITY_TASKS)


def task_behavior(task: str) -> str | None:
    """The behavior a ``caa_ab_*`` task measures (None for MMLU / TruthfulQA)."""
    return task[len(_AB_PREFIX) :] if task.startswith(_AB_PREFIX) else None


def primary_metric(task: str) -> str:
    """The headline metric: ``p_match`` for behaviors, the category mean for capabilities."""
    return "p_correct_cat" if task in CAPABILITY_TASKS else "p_match"


def tasks_dir() -> Path:
    """The task YAML folder: ``$CAA_BAKE_EVAL_TASKS`` or the checkout's ``eval_tasks/``."""
    explicit = os.environ.get(TASKS_ENV)
    checkout = Path(__file__).resolve().parents[2]
    folder = Path(explicit).expanduser() if explicit else checkout / "eval_tasks"
    if not (folder / "utils.py").is_file():
        raise CaaBakeError(
            f"the lm-eval task folder {folder} is missing (no utils.py); set {TASKS_ENV} to the "
            "eval_tasks/ folder of a caa-bake checkout"
        )
    return folder


def resolve_tasks(spec: str | None, behavior: str | None) -> list[str]:
    """Leaf task names for one steered behavior (``None``: the unsteered model).

    ``spec`` is a comma list of task names, groups (``caa``, ``caa_ab``) or aliases: ``ab``
    (the behavior's own task; every behavior task for ``behavior=None``), ``mmlu``,
    ``truthfulqa``. Default ``ab,mmlu,truthfulqa``.
    """
    valid = _known_tasks()
    out: list[str] = []
    for raw in (spec or "ab,mmlu,truthfulqa").split(","):
        name = raw.strip()
        if not name:
            continue
        if name == "ab":
            chosen = [ab_task(behavior)] if behavior else [ab_task(b) for b in CAA_BEHAVIORS]
        elif name == "caa":
            chosen = [ab_task(b) for b in CAA_BEHAVIORS] + list(CAPABILITY_TASKS)
        elif name == "caa_ab":
            chosen = [ab_task(b) for b in CAA_BEHAVIORS]
        elif name == "caa_ab_anthropic":
            chosen = [ab_task(b) for b in ANTHROPIC_BEHAVIORS]
        elif name in _ALIASES:
            chosen = [_ALIASES[name]]
        elif name in valid:
            chosen = [name]
        else:
            raise CaaBakeError(
                f"unknown task '{name}'; valid: ab, mmlu, truthfulqa, {', '.join(GROUPS)}, "
                + ", ".join(valid)
            )
        out += [t for t in chosen if t not in out]
    if not out:
        raise CaaBakeError("no tasks given (--tasks is empty)")
    return out


def check_task_data(tasks: Sequence[str]) -> None:
    """Load every task's data once, so a missing or broken dataset fails before any model work."""
    for task in tasks:
        behavior = task_behavior(task)
        if behavior is not None:
            load_pairs(check_behavior(behavior), "test")
        else:
            load_ab_eval(CAPABILITY_TASKS[task])


@dataclass(frozen=True)
class PromptSetup:
    """How lm-eval must build prompts for a model so they equal ``encode_prompt``'s.

    ``letter_ids`` maps ``A`` / ``B`` to the scored token (``(A`` / ``(B`` when merged).
    """

    style: PromptStyle
    apply_chat_template: bool
    task_style: str
    letter_ids: dict[str, int]
    answer_format: AnswerFormat = "split"


def prompt_setup(tokenizer: PreTrainedTokenizerBase, config: Any = None) -> PromptSetup:
    """The prompt setup for a model; raises when the answers are not single next tokens."""
    style = detect_style(tokenizer, config)
    answer = answer_format(tokenizer, style)
    letters = letter_token_ids(tokenizer, style, answer=answer)
    task_style = "chat" if style == "chat-template" else style
    return PromptSetup(style, style == "chat-template", task_style, letters, answer)


@dataclass(frozen=True)
class SampleValue:
    """One doc's result: p(A), p(B) (exp of lm-eval's loglikelihoods) and its metric value.

    p(A) is the next-token probability of the answer token after the whole prompt when the
    model is wrapped by :func:`caa_bake.evaluation.common.make_lm`, which keeps a prompt's
    trailing whitespace in the context (stock lm-eval moves it into the continuation: with a
    merged ``(A`` format that multiplies both answers by p(ChatML's newline); see
    ``eval_tasks/README.md``).
    """

    doc_id: int
    target: str
    p_a: float
    p_b: float
    value: float


@dataclass
class TaskResult:
    """A task's aggregated metrics (with ``<metric>_stderr`` where lm-eval gives one)."""

    metrics: dict[str, float]
    n: int
    samples: list[SampleValue] = field(default_factory=list)


@contextlib.contextmanager
def quiet_lm_eval(level: int = logging.ERROR) -> Iterator[None]:
    """Raise lm-eval's logger threshold inside the block (its INFO/WARNING lines are noise)."""
    logger = logging.getLogger("lm_eval")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _versions_only(storage: dict[str, Any]) -> None:
    """Stand-in for lm-eval's ``add_env_info``: the package versions, without
    ``torch.utils.collect_env`` (which runs ``pip list`` and friends: ~2.5 s per
    ``simple_evaluate`` call here, 30 s for the first; paid once per evaluated variant or
    sweep point; ``benchmarks/lm_eval_overhead.py``). caa-bake
    records its own provenance in every results file."""
    from importlib.metadata import version

    storage["pretty_env_info"] = "not collected (caa-bake records its own provenance)"
    storage["transformers_version"] = version("transformers")
    storage["lm_eval_version"] = version("lm_eval")


@contextlib.contextmanager
def light_env_info() -> Iterator[None]:
    """Inside the block lm-eval's ``simple_evaluate`` records versions only (see
    :func:`_versions_only`); everything it evaluates is unchanged."""
    import lm_eval.evaluator as evaluator

    original = evaluator.add_env_info
    evaluator.add_env_info = _versions_only
    try:
        yield
    finally:
        evaluator.add_env_info = original


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _task_result(task: str, metrics: dict[str, Any], samples: list[dict[str, Any]]) -> TaskResult:
    clean: dict[str, float] = {}
    for key, value in metrics.items():
        name, _, _filter = key.partition(",")
        number = _number(value)
        if number is not None and name not in ("alias", "samples", "sample_len"):
            clean[name] = number
    metric = "p_correct" if task in CAPABILITY_TASKS else "p_match"
    values = []
    for sample in samples:
        (ll_a, _), (ll_b, _) = sample["filtered_resps"]
        values.append(
            SampleValue(
                doc_id=int(sample["doc"].get("id", sample["doc_id"])),  # index in the file
                target=str(sample["doc"]["target"]),
                p_a=math.exp(float(ll_a)),
                p_b=math.exp(float(ll_b)),
                value=float(sample[metric]),
            )
        )
    return TaskResult(clean, len(samples), values)


def _lm_eval_calls(tasks: Sequence[str]) -> list[tuple[dict[str, str], list[str]]]:
    """Group ``tasks`` into lm-eval calls: the task-folder tasks together, then one call of
    the generic custom task per custom behavior. Each: (extra metadata, task names)."""
    calls: list[tuple[dict[str, str], list[str]]] = []
    plain = []
    for task in tasks:
        behavior = task_behavior(task)
        if behavior is not None and is_custom(behavior):
            calls.append(({"custom_behavior": behavior}, [task]))
        else:
            plain.append(task)
    return ([({}, plain)] if plain else []) + calls


def run_tasks(
    lm: LM,
    tasks: Sequence[str],
    setup: PromptSetup,
    *,
    limit: int | None = None,
    data_dir: Path | None = None,
) -> dict[str, TaskResult]:
    """Evaluate leaf ``tasks`` on ``lm``; returns each task's metrics and per-doc values.

    A custom behavior's ``caa_ab_<name>`` runs lm-eval's ``caa_ab_custom`` with the metadata
    ``custom_behavior: <name>`` (one ``simple_evaluate`` call per custom behavior).
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    base = {
        "data_dir": str(data_dir or datasets_dir()),
        "prompt_style": setup.task_style,
        "answer_format": setup.answer_format,
    }
    out: dict[str, TaskResult] = {}
    for extra, names in _lm_eval_calls(tasks):
        lm_names = [CUSTOM_TASK] if extra else list(names)
        with quiet_lm_eval(), light_env_info():
            manager = TaskManager(
                include_path=str(tasks_dir()), include_defaults=False, metadata={**base, **extra}
            )
            output = simple_evaluate(
                model=lm,
                tasks=lm_names,
                task_manager=manager,
                limit=limit,
                apply_chat_template=setup.apply_chat_template,
                log_samples=True,
            )
        if output is None:
            raise CaaBakeError("lm-eval returned no results (not the main process?)")
        for task, lm_name in zip(names, lm_names, strict=True):
            out[task] = _task_result(task, output["results"][lm_name], output["samples"][lm_name])
    return {task: out[task] for task in tasks}
