"""The lm-eval half of ``caa-bake verify``: lm-eval's ``hf`` model scores like transformers.

One probe continuation is scored twice: by hand with the export loaded by transformers
(:func:`hand_loglikelihood`) and through lm-eval's ``HFLM`` loading the export folder
(:func:`lm_eval_check`). The caller frees its own model between the two, so a large model is
never in memory twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "LmEvalCheck",
    "hand_loglikelihood",
    "lm_eval_check",
    "lm_eval_request",
    "logits_of",
    "quiet_loading",
]


@dataclass(frozen=True)
class LmEvalCheck:
    """Loglikelihood of one probe continuation through lm-eval's ``hf`` model and transformers."""

    context: str
    continuation: str
    lm_eval: float
    transformers: float

    @property
    def diff(self) -> float:
        return abs(self.lm_eval - self.transformers)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' "Loading weights" bars (verify prints its own report)."""
    from transformers.utils import logging as tf_logging

    was_enabled = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            tf_logging.enable_progress_bar()


def logits_of(model: Any, ids: Sequence[int]) -> torch.Tensor:
    """Float32 logits at every position of one unbatched prompt (no KV cache)."""
    out = model(torch.tensor([list(ids)]), use_cache=False)
    return out.logits[0].to(torch.float32)


def lm_eval_request(tokenizer: Any, question: str, style: Any = None) -> tuple[str, str]:
    """The (context, continuation) the lm-eval check scores: the evaluation prompt of
    ``question`` and the answer ``A)`` in the tokenizer's answer format.

    Split format: context ends with the prefilled ``(``, continuation ``A)``. Merged format
    (``(A`` is one token, e.g. Qwen2): nothing is prefilled and the continuation is ``(A)``, so
    the boundary falls between whole tokens. Trailing whitespace of the context moves to the
    continuation, as lm-eval does itself, so both ways score the same strings.
    """
    from caa_bake.models import answer_choice, answer_format, eval_prefix

    fmt = answer_format(tokenizer, style)
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    else:
        rendered = f"Question: {question}\nAnswer: "
    context = f"{rendered}{eval_prefix(fmt)}"
    continuation = f"{answer_choice('A', fmt)})"
    stripped = context.rstrip()
    return stripped, context[len(stripped) :] + continuation


def hand_loglikelihood(model: Any, tokenizer: Any, context: str, continuation: str) -> float:
    """log p(continuation | context) by hand, tokenized the way lm-eval does."""
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    n_context = len(tokenizer.encode(context, add_special_tokens=False))
    logprobs = torch.log_softmax(logits_of(model, whole), dim=-1)
    return sum(float(logprobs[pos - 1, whole[pos]]) for pos in range(n_context, len(whole)))


def lm_eval_check(
    export_dir: Path, context: str, continuation: str, by_hand: float, dtype: str = "float32"
) -> LmEvalCheck:
    """The same loglikelihood through lm-eval's ``HFLM`` loading ``export_dir`` itself.

    ``by_hand`` comes from :func:`hand_loglikelihood` on the export loaded by transformers;
    the caller frees that model first, so only one copy is in memory at a time.
    """
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    with quiet_loading():
        lm = HFLM(
            pretrained=str(export_dir),
            device="cpu",
            batch_size=1,
            dtype=dtype,
            add_bos_token=False,
            trust_remote_code=False,
        )
    request = Instance(
        request_type="loglikelihood", doc={}, arguments=(context, continuation), idx=0
    )
    ((ll_lm_eval, _is_greedy),) = lm.loglikelihood([request], disable_tqdm=True)
    return LmEvalCheck(context, continuation, float(ll_lm_eval), by_hand)
