"""Pieces shared by ``caa-bake eval`` and ``caa-bake sweep``: option parsing, the loaded
model with its prompt setup, lm-eval model objects, run folders and provenance."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from caa_bake import __version__
from caa_bake.core import CaaBakeError, is_quiet, parse_multipliers, results_dir
from caa_bake.data import (
    CAA_BEHAVIORS,
    ab_eval_path,
    check_behavior,
    custom_record,
    dataset_path,
    file_sha256,
    is_custom,
)
from caa_bake.evaluation.reference_hooks import steering_tail
from caa_bake.evaluation.tasks import (
    CAPABILITY_TASKS,
    PromptSetup,
    prompt_setup,
    task_behavior,
    tasks_dir,
)
from caa_bake.models import ModelRef, dtype_name, parse_dtype
from caa_bake.steering import ModelLoader

if TYPE_CHECKING:
    from lm_eval.models.huggingface import HFLM
    from torch import nn
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "LoadedModel",
    "PartialLog",
    "behavior_provenance",
    "check_behaviors",
    "check_limit",
    "check_vector_dtype",
    "describe_set",
    "load_for_eval",
    "make_lm",
    "parse_multipliers",
    "prepare_run_dir",
    "provenance",
    "scored_tail",
    "tasks_sha256",
    "vector_loader",
]

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_limit(limit: int | None) -> int | None:
    """``--limit``: None (every item) or a positive number of items per task."""
    if limit is not None and limit < 1:
        raise CaaBakeError(f"--limit must be a positive number of items per task, got {limit}")
    return limit


def check_behaviors(names: Sequence[str]) -> list[str]:
    """Canonical behavior names (CAA, anthropic-* or registered custom), in the given order.

    Whether each has a test split is checked with its task's data (``check_task_data``).
    """
    out: list[str] = []
    for name in names:
        canonical = check_behavior(name)
        if canonical not in out:
            out.append(canonical)
    if not out:
        raise CaaBakeError("name a behavior (--behavior B) or pass --all-behaviors")
    return out


def prepare_run_dir(
    run: str | None, prefix: str, slug: str, *, force: bool, resume: bool = False
) -> Path:
    """``results/<run>/`` (default ``<prefix>-<model slug>-<UTC time>``).

    It must be new or empty unless ``force`` (overwrite) or ``resume`` (continue the
    finished parts recorded in its :class:`PartialLog`).
    """
    if resume and not run:
        raise CaaBakeError("--resume needs the --run name of the interrupted run")
    name = run or f"{prefix}-{slug}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    if not _RUN_NAME.match(name):
        raise CaaBakeError(f"run name {name!r} must use letters, digits, '.', '_' or '-'")
    folder = results_dir() / name
    if folder.exists() and any(folder.iterdir()) and not (force or resume):
        raise CaaBakeError(
            f"{folder} already holds results; pick another --run, --resume it or pass --force"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CaaBakeError(f"cannot create {folder}: {exc.strerror or exc}") from None
    return folder


class PartialLog:
    """Finished units of a run (sweep points, eval variants), one JSON line each, appended as
    they finish so that an interrupted run can be resumed. A unit is reused only when its
    key (what was evaluated: model and vector hashes, tasks, limit, ...) is identical."""

    def __init__(self, path: Path, *, resume: bool) -> None:
        self.path = path
        self._done: dict[str, Any] = {}
        if resume and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by the interruption
                self._done[json.dumps(record["key"], sort_keys=True)] = record["value"]
        elif path.exists():
            path.unlink()

    def __len__(self) -> int:
        return len(self._done)

    def get(self, key: dict[str, Any]) -> Any:
        """The stored value of ``key``, or None."""
        return self._done.get(json.dumps(key, sort_keys=True))

    def add(self, key: dict[str, Any], value: Any) -> None:
        """Record a finished unit (flushed to disk at once)."""
        self._done[json.dumps(key, sort_keys=True)] = value
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"key": key, "value": value}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


@dataclass
class LoadedModel:
    """The source model in memory, with what evaluation needs to know about its prompts."""

    ref: ModelRef
    loader: ModelLoader
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    setup: PromptSetup
    tail: list[int]

    @property
    def dtype(self) -> str:
        """The dtype the model runs in (recorded in every results file)."""
        return dtype_name(self.loader.dtype)


def load_for_eval(
    ref: ModelRef, device: str = "cpu", dtype: torch.dtype | None = None
) -> LoadedModel:
    """Load ``ref`` once in ``dtype`` (default float32; shared with vector extraction, so
    vectors are extracted in the same dtype) and work out its prompt setup."""
    loader = ModelLoader(ref, device=device) if dtype is None else ModelLoader(ref, dtype, device)
    model, tokenizer = loader.get()
    setup = prompt_setup(tokenizer, getattr(model, "config", None))
    return LoadedModel(ref, loader, model, tokenizer, setup, steering_tail(tokenizer, setup.style))


def check_vector_dtype(name: str | None) -> torch.dtype | None:
    """``--vector-dtype``: None (the run's own dtype) or an explicit dtype (not ``auto``)."""
    if name is None:
        return None
    dtype = parse_dtype(name)
    if dtype is None:
        raise CaaBakeError("--vector-dtype must name a dtype (float32, bfloat16, float16)")
    return dtype


def vector_loader(loaded: LoadedModel, vector_dtype: str | None) -> ModelLoader:
    """The loader whose dtype the steering vectors must have: the run's own model, or for
    ``--vector-dtype`` another dtype (cached vectors of a bfloat16 GPU run are then used as
    they are on a float32 CPU; that loader loads the model only if a vector is missing)."""
    dtype = check_vector_dtype(vector_dtype)
    if dtype is None or dtype == loaded.loader.dtype:
        return loaded.loader
    return ModelLoader(loaded.ref, dtype=dtype, device=loaded.loader.device)


def scored_tail(inps: torch.Tensor, longest_continuation: int) -> int:
    """How many trailing positions of a right-padded lm-eval batch hold every scored logit.

    lm-eval pads a batch's rows on the right with token 0 and reads row ``r``'s continuation
    logits at ``inplen_r - contlen .. inplen_r - 1``; it locates them relative to the end of
    the logits it gets back, so the last ``max_r(width - inplen_r) + contlen`` positions are
    all it needs. A row's length is taken as its last non-zero token + 1: a real trailing
    token 0 only makes that estimate shorter, so the tail longer (never too short).
    """
    width = int(inps.shape[1])
    nonzero = inps != 0
    idx = torch.arange(1, width + 1, device=inps.device).expand_as(inps)
    est_len = (idx * nonzero).max(dim=1).values.clamp(min=1)
    return min(width, int((width - est_len).max()) + max(1, longest_continuation))


def make_lm(model: nn.Module, tokenizer: PreTrainedTokenizerBase, batch_size: int) -> HFLM:
    """An lm-eval ``HFLM`` around a model object (forward hooks on it are honoured).

    It scores each choice at the answer position: a context's trailing whitespace stays in
    the context. Stock lm-eval moves it into the continuation, which for a merged ``(A``
    answer after ChatML's ``assistant\n`` multiplies p(A) and p(B) by p(newline) (~1e-4 on
    Qwen2.5): ``p_match`` is a ratio and unchanged, ``nonsense`` would read ~1. The forward
    rows are the same either way. With ``--quiet`` its request progress bar is off.

    The LM head runs only on the trailing positions where a continuation is scored
    (:func:`scored_tail`, via transformers' ``logits_to_keep``), without a KV cache: lm-eval
    otherwise computes and log-softmaxes full-vocabulary logits at every position.
    """
    from lm_eval.models.huggingface import HFLM

    from caa_bake.evaluation.tasks import quiet_lm_eval

    keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    class _AnswerPositionHFLM(HFLM):
        _longest_continuation: int | None = None

        def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
            if self.backend == "causal" and context[-1:].isspace():
                whole = self.tok_encode(context + continuation)
                head = self.tok_encode(context)
                if len(whole) > len(head) and whole[: len(head)] == head:
                    return head, whole[len(head) :]
            return super()._encode_pair(context, continuation)

        def _loglikelihood_tokens(self, requests: Any, *args: Any, **kwargs: Any) -> Any:
            self._longest_continuation = max((len(r[2]) for r in requests), default=None)
            try:
                return super()._loglikelihood_tokens(requests, *args, **kwargs)
            finally:
                self._longest_continuation = None

        def _model_call(
            self,
            inps: torch.Tensor,
            attn_mask: torch.Tensor | None = None,
            labels: torch.Tensor | None = None,
        ) -> torch.Tensor:
            longest = self._longest_continuation
            if (
                not keeps_logits
                or longest is None
                or attn_mask is not None
                or labels is not None
                or self.backend != "causal"
                or self.mixed_precision_dtype is not None
            ):
                return super()._model_call(inps, attn_mask, labels)
            keep = scored_tail(inps, longest)
            with torch.no_grad():
                out = self.model(inps, logits_to_keep=keep, use_cache=False)
            return out.logits

    class _QuietHFLM(_AnswerPositionHFLM):
        def loglikelihood(self, requests: Any, disable_tqdm: bool = False) -> Any:
            return super().loglikelihood(requests, disable_tqdm=True)

    if batch_size < 1:
        raise CaaBakeError(f"--batch-size must be at least 1, got {batch_size}")
    cls = _QuietHFLM if is_quiet() else _AnswerPositionHFLM
    with quiet_lm_eval():
        return cls(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def tasks_sha256() -> str:
    """sha256 over the files of the task folder (YAMLs and utils.py)."""
    return _tree_sha256(tasks_dir())


def _tree_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix != ".pyc"):
        digest.update(f"{path.name}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _data_files(tasks: Sequence[str]) -> dict[str, str]:
    files: dict[str, str] = {}
    for task in tasks:
        behavior = task_behavior(task)
        path = (
            dataset_path(behavior, "test")
            if behavior is not None
            else ab_eval_path(CAPABILITY_TASKS[task])
        )
        files[task] = file_sha256(path)
    return files


def describe_set(members: Sequence[str]) -> str:
    """A normalization set in words: "the 7 CAA behaviors" or the names."""
    same = sorted(members) == sorted(CAA_BEHAVIORS)
    return "the 7 CAA behaviors" if same else ",".join(members)


def behavior_provenance(behaviors: Sequence[str]) -> dict[str, Any]:
    """Per behavior: its family and the sha256 of its generate and test files; for a custom
    behavior also its source file, that file's sha256 and how it was split."""
    out: dict[str, Any] = {}
    for name in behaviors:
        kind = "caa" if name in CAA_BEHAVIORS else "anthropic"
        entry: dict[str, Any] = {"kind": "custom" if is_custom(name) else kind}
        for split in ("generate", "test"):
            path = dataset_path(name, split)
            entry[f"{split}_sha256"] = file_sha256(path) if path.is_file() else None
        if is_custom(name):
            record = custom_record(name) or {}
            for key in ("source_file", "source_sha256", "test_file", "test_sha256", "split"):
                if key in record:
                    entry[key] = record[key]
        out[name] = entry
    return out


def provenance(loaded: LoadedModel, tasks: Sequence[str]) -> dict[str, Any]:
    """Versions, the command line, model identity and the hashes of tasks and data."""
    import lm_eval
    import torch
    import transformers

    ref = loaded.ref
    return {
        "tool": f"caa-bake {__version__}",
        "command": " ".join(["caa-bake", *sys.argv[1:]]),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {
            "lm_eval": getattr(lm_eval, "__version__", "unknown"),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "torch_threads": torch.get_num_threads(),
        "dtype": loaded.dtype,
        "device": str(loaded.loader.device),
        "model": {
            "model_id": ref.model_id,
            "path": str(ref.path),
            "revision": ref.revision,
            "weights_fingerprint": ref.weights_fingerprint,
            "prompt_style": loaded.setup.style,
            "apply_chat_template": loaded.setup.apply_chat_template,
            "answer_format": loaded.setup.answer_format,
            "scored_at_answer_position": True,  # make_lm keeps trailing whitespace
            "letter_token_ids": loaded.setup.letter_ids,
            "steering_tail_ids": loaded.tail,
        },
        "eval_tasks_sha256": tasks_sha256(),
        "dataset_sha256": _data_files(tasks),
    }
