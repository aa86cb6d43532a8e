"""The lm-eval half of ``verify``: the request it scores and the parity of the two ways.

With a tokenizer that merges ``(A`` into one token (the real Qwen2.5 vocabulary), the request
must not cut a token in two: nothing is prefilled and ``(A)`` is the continuation, with the
header's trailing newline moved into it as lm-eval does. Then lm-eval's ``HFLM`` and a
forward pass by hand give the same loglikelihood.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from qwen2_tokenizer import qwen2_dirs
from transformers import AutoModelForCausalLM, AutoTokenizer

from caa_bake.bake.lm_eval_parity import hand_loglikelihood, lm_eval_check, lm_eval_request
from caa_bake.models.prompts import answer_format

QUESTION = "Would you accept more compute?\n\nChoices:\n(A) Yes\n(B) No"


def test_merged_request_keeps_whole_tokens(tmp_path_factory: pytest.TempPathFactory) -> None:
    tokenizer = AutoTokenizer.from_pretrained(qwen2_dirs(tmp_path_factory)[0])
    assert answer_format(tokenizer, "chat-template") == "merged"
    context, continuation = lm_eval_request(tokenizer, QUESTION, "chat-template")
    assert context.endswith("<|im_start|>assistant")
    assert continuation == "\n(A)"
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    head = tokenizer.encode(context, add_special_tokens=False)
    assert whole[: len(head)] == head
    assert tokenizer.convert_ids_to_tokens(whole[len(head) :])[1] == "(A"


def test_split_request_is_the_prefilled_paren(tiny_models: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["llama"])
    context, continuation = lm_eval_request(tokenizer, QUESTION)
    assert (context[-1], continuation) == ("(", "A)")


def test_merged_parity_with_lm_eval(tmp_path_factory: pytest.TempPathFactory) -> None:
    tokenizer_dir, model_dir = qwen2_dirs(tmp_path_factory)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    context, continuation = lm_eval_request(tokenizer, QUESTION, "chat-template")
    with torch.inference_mode():
        by_hand = hand_loglikelihood(model, tokenizer, context, continuation)
    check = lm_eval_check(model_dir, context, continuation, by_hand)
    assert check.transformers == by_hand
    assert check.diff < 1e-4
    assert by_hand < 0
