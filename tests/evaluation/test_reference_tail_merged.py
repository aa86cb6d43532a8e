"""Reference-position steering finds its start in merged-format (Qwen2) evaluation prompts.

With nothing prefilled, the tail from the end of the instruction to the end of the prompt is
ChatML's header newline; every row lm-eval feeds the model (prompt, then zero padding) must
contain it, at the instruction end of ``encode_prompt(tokenizer, question, "")``.
"""

from __future__ import annotations

import pytest
import torch
from qwen2_tokenizer import qwen2_dirs
from transformers import AutoTokenizer

from caa_bake.evaluation.reference_hooks import steering_tail, tail_starts
from caa_bake.models.prompts import encode_prompt


def test_merged_tail_is_the_header_end(tmp_path_factory: pytest.TempPathFactory) -> None:
    tokenizer = AutoTokenizer.from_pretrained(qwen2_dirs(tmp_path_factory)[0])
    tail = steering_tail(tokenizer, "chat-template")
    assert tail == [198]  # "\n" after "<|im_start|>assistant": no "(" any more
    prompts = [
        encode_prompt(tokenizer, q, "", style="chat-template")
        for q in ("Would you?\n\nChoices:\n(A) Yes\n(B) No", "Short?\n(A) a\n(B) b")
    ]
    width = max(len(p.input_ids) for p in prompts) + 2
    rows = torch.zeros((len(prompts), width), dtype=torch.long)  # lm-eval pads with 0
    for i, p in enumerate(prompts):
        rows[i, : len(p.input_ids)] = torch.tensor(p.input_ids)
    starts = tail_starts(rows, tail)
    assert starts.tolist() == [p.instruction_end_index for p in prompts]
