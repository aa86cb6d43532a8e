"""A/B prompts for CAA: the Llama-2 chat format, a model's own chat template, or plain text.

Every prompt is a user turn holding the question and an assistant turn prefilled with a
prefix: ``(A)`` / ``(B)`` to extract vectors; to evaluate, ``(`` or nothing (see *Answer
formats*). Besides the token ids, :func:`encode_prompt` returns two positions:

- ``answer_index``: the token holding the answer letter (the letter right after the last
  ``(`` of the prefix), found from the tokenizer's character offsets so tokenizers that merge
  ``(A`` or ``A)`` into one token still work; for a prefix ending in ``(`` (or an empty one)
  the last token, whose next-token distribution is read.
- ``instruction_end_index``: the last token of the instruction (Llama-2: the ``]`` of the last
  ``[/INST]``; chat templates: the last token of the generation prompt; plain: the ``:`` of
  ``Answer:``). Reference CAA steers from this position onward.

Styles:

- ``llama2-chat``: exactly the reference format, ``<s>[INST] {question} [/INST] {prefix}``
  (BOS id prepended once, no system prompt).
- ``chat-template``: ``apply_chat_template([user: question], add_generation_prompt=True)`` as
  text, then the prefix; tokenized without adding special tokens again (the template has them;
  a BOS is prepended only if the tokenizer adds one and the template did not).
- ``plain`` (base models without a chat template): ``Question: {question}\\nAnswer: {prefix}``,
  with BOS if the tokenizer adds one by default.

Question and prefix are stripped of surrounding whitespace (data sets write ``" (A)"``).

Answer formats (:func:`answer_format`, decided per tokenizer and style from the ``(A)`` probe):

- ``split``: the letter is a token of its own after ``(`` (Llama-2's SentencePiece, SmolLM2).
  Evaluation prefills ``(`` and scores the next tokens ``A`` / ``B``.
- ``merged``: one token holds both ``(`` and the letter (Qwen2's ``(A`` = 4346). Evaluation
  prefills nothing and scores the next tokens ``(A`` / ``(B``; extraction reads the ``(A``
  token and finetuning targets it.

``eval_tasks/utils.py`` makes the same decision for stock lm-eval (it cannot import this
module; the tests check both agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch

from caa_bake.core import CaaBakeError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from transformers import PreTrainedTokenizerBase

__all__ = [
    "ANSWER_FORMATS",
    "AnswerFormat",
    "EncodedPrompt",
    "PromptStyle",
    "answer_choice",
    "answer_format",
    "detect_style",
    "encode_prompt",
    "eval_prefix",
    "letter_token_ids",
    "pad_batch",
]

PromptStyle = Literal["llama2-chat", "chat-template", "plain"]
PROMPT_STYLES: tuple[str, ...] = get_args(PromptStyle)
AnswerFormat = Literal["split", "merged"]
ANSWER_FORMATS: tuple[str, ...] = get_args(AnswerFormat)
LLAMA2_VOCAB = 32000
_PROBE_QUESTION = "Which one?\n\nChoices:\n(A) Yes\n(B) No"


@dataclass(frozen=True)
class EncodedPrompt:
    """Token ids of one prompt and the two positions CAA needs (0-based, unpadded)."""

    input_ids: list[int]
    answer_index: int
    instruction_end_index: int


def _chat_template(tokenizer: PreTrainedTokenizerBase) -> str | None:
    template: Any = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default") or next(iter(template.values()), None)
    return template if isinstance(template, str) and template else None


def detect_style(tokenizer: PreTrainedTokenizerBase, config: Any = None) -> PromptStyle:
    """Pick the prompt style for a model (pass ``style=`` to :func:`encode_prompt` to override).

    ``llama2-chat`` for Llama-2 chat models: a name containing "llama-2" and "chat", or a
    llama config (or no config) with the 32000-token Llama vocabulary and an ``[INST]`` chat
    template. Otherwise ``chat-template`` when the tokenizer has a chat template, else ``plain``.
    """
    names = [
        getattr(tokenizer, "name_or_path", None),
        getattr(config, "_name_or_path", None),
        getattr(config, "name_or_path", None),
    ]
    lowered = " ".join(n for n in names if isinstance(n, str)).lower()
    if "llama-2" in lowered and "chat" in lowered:
        return "llama2-chat"
    template = _chat_template(tokenizer)
    model_type = getattr(config, "model_type", None) if config is not None else "llama"
    vocab = getattr(tokenizer, "vocab_size", None)
    if model_type == "llama" and vocab == LLAMA2_VOCAB and template and "[INST]" in template:
        return "llama2-chat"
    return "chat-template" if template else "plain"


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer prepends its BOS token by default."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def _layout(
    tokenizer: PreTrainedTokenizerBase, question: str, prefix: str, style: PromptStyle
) -> tuple[str, int, bool]:
    """(text without BOS, length of the instruction part of ``text``, prepend BOS?)."""
    if style == "llama2-chat":
        if tokenizer.bos_token_id is None:
            raise CaaBakeError("the llama2-chat prompt style needs a tokenizer with a BOS token")
        instruction = f"[INST] {question} [/INST]"
        return instruction + (f" {prefix}" if prefix else ""), len(instruction), True
    if style == "chat-template":
        if _chat_template(tokenizer) is None:
            raise CaaBakeError(
                "the chat-template prompt style needs a tokenizer with a chat template"
            )
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        if not isinstance(rendered, str):
            raise CaaBakeError("the tokenizer's chat template did not render to text")
        bos = tokenizer.bos_token
        prepend = _adds_bos(tokenizer) and not (bos and rendered.startswith(bos))
        return rendered + prefix, len(rendered), prepend
    if style == "plain":
        instruction = f"Question: {question}\nAnswer:"
        return (
            instruction + (f" {prefix}" if prefix else ""),
            len(instruction),
            _adds_bos(tokenizer),
        )
    raise CaaBakeError(f"unknown prompt style '{style}' (use one of {', '.join(PROMPT_STYLES)})")


def _answer_char(prefix: str) -> int | None:
    """Index in ``prefix`` of the answer letter; None when the next token is the answer."""
    if not prefix or prefix.endswith("("):
        return None
    paren = prefix.rfind("(")
    if 0 <= paren < len(prefix) - 1 and prefix[paren + 1].isalnum():
        return paren + 1
    alnum = [i for i, ch in enumerate(prefix) if ch.isalnum()]
    if not alnum:
        raise CaaBakeError(f"no answer letter in the assistant prefix {prefix!r} (expected '(A)')")
    return alnum[-1]


def _encode(
    tokenizer: PreTrainedTokenizerBase, text: str, *, offsets: bool
) -> tuple[list[int], list[tuple[int, int]] | None]:
    """Token ids of ``text`` without special tokens, with character offsets when available."""
    if offsets and getattr(tokenizer, "is_fast", False):
        try:
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except (NotImplementedError, ValueError, TypeError):
            enc = None
        mapping = enc.get("offset_mapping") if enc is not None else None
        if enc is not None and mapping is not None:
            return list(enc["input_ids"]), [(int(a), int(b)) for a, b in mapping]
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]), None


def _token_covering(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    ids: list[int],
    spans: list[tuple[int, int]] | None,
    char: int,
) -> int:
    """Index of the token whose characters include ``text[char]``.

    With offsets: the last token whose span covers ``char``. Without (or if no span covers
    it): tokenize ``text[:char]``; the first token where that differs from ``ids`` (or the
    token right after it) is the one that holds ``char``.
    """
    if spans is not None:
        covering = [i for i, (start, end) in enumerate(spans) if start <= char < end]
        if covering:
            return covering[-1]
    before, _ = _encode(tokenizer, text[:char], offsets=False)
    common = 0
    for a, b in zip(before, ids, strict=False):
        if a != b:
            break
        common += 1
    if common >= len(ids):
        raise CaaBakeError(f"cannot find the token holding {text[char]!r} at character {char}")
    return common


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    assistant_prefix: str,
    *,
    style: PromptStyle | None = None,
) -> EncodedPrompt:
    """Encode one A/B prompt (see the module docstring for the formats and positions)."""
    style = style or detect_style(tokenizer)
    question, prefix = question.strip(), assistant_prefix.strip()
    text, instruction_len, prepend_bos = _layout(tokenizer, question, prefix, style)
    ids, spans = _encode(tokenizer, text, offsets=True)
    if not ids:
        raise CaaBakeError("the prompt encoded to no tokens")
    lead = [int(tokenizer.bos_token_id)] if prepend_bos else []
    instruction_end = _token_covering(tokenizer, text, ids, spans, instruction_len - 1)
    letter = _answer_char(prefix)
    if letter is None:
        answer = len(ids) - 1
    else:
        answer = _token_covering(tokenizer, text, ids, spans, len(text) - len(prefix) + letter)
    return EncodedPrompt(
        input_ids=lead + ids,
        answer_index=len(lead) + answer,
        instruction_end_index=len(lead) + instruction_end,
    )


def answer_format(
    tokenizer: PreTrainedTokenizerBase, style: PromptStyle | None = None
) -> AnswerFormat:
    """``merged`` when the token holding the letter of a prefilled ``(A)`` also holds the ``(``.

    Decided on a probe question in the real prompt layout of ``style`` (the characters before
    ``(`` can change how it tokenizes); ``split`` otherwise.
    """
    style = style or detect_style(tokenizer)
    text, _, _ = _layout(tokenizer, _PROBE_QUESTION, "(A)", style)
    ids, spans = _encode(tokenizer, text, offsets=True)
    paren = len(text) - len("(A)")
    same = _token_covering(tokenizer, text, ids, spans, paren) == _token_covering(
        tokenizer, text, ids, spans, paren + 1
    )
    return "merged" if same else "split"


def eval_prefix(answer: AnswerFormat) -> str:
    """The assistant prefix of an evaluation prompt: ``(`` (split) or nothing (merged)."""
    return "" if answer == "merged" else "("


def answer_choice(letter: str, answer: AnswerFormat) -> str:
    """The scored continuation of ``letter`` after :func:`eval_prefix`: ``A`` or ``(A``."""
    return f"({letter}" if answer == "merged" else letter


def letter_token_ids(
    tokenizer: PreTrainedTokenizerBase,
    style: PromptStyle | None = None,
    *,
    letters: Sequence[str] = ("A", "B"),
    answer: AnswerFormat | None = None,
) -> dict[str, int]:
    """Token id scored for each letter in an evaluation prompt (``A`` or, merged, ``(A``).

    Checks that the ``(X)`` prompt starts with exactly the evaluation prompt's tokens (ending in
    :func:`eval_prefix`) and that the next token holds :func:`answer_choice` and nothing else;
    raises CaaBakeError otherwise (then p(answer | prompt) is not one next-token probability).
    """
    style = style or detect_style(tokenizer)
    answer = answer or answer_format(tokenizer, style)
    stem = encode_prompt(tokenizer, _PROBE_QUESTION, eval_prefix(answer), style=style).input_ids
    found: dict[str, int] = {}
    for letter in letters:
        full = encode_prompt(tokenizer, _PROBE_QUESTION, f"({letter})", style=style)
        token = full.input_ids[full.answer_index] if full.answer_index < len(full.input_ids) else -1
        choice = answer_choice(letter, answer)
        if (
            full.input_ids[: len(stem)] != stem
            or full.answer_index != len(stem)
            or str(tokenizer.decode([token])).strip() != choice
        ):
            where = "after '('" if answer == "split" else "after the assistant header"
            raise CaaBakeError(
                f"'{choice}' is not a single token {where} with this tokenizer ({style} prompts, "
                f"{answer} answer format); A/B evaluation by next-token probability is not possible"
            )
        found[letter] = token
    return found


def pad_batch(
    prompts: list[EncodedPrompt], pad_id: int, side: Literal["left", "right"]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Pad prompts into (input_ids, attention_mask, position_ids, answer_positions).

    ``answer_positions`` are the answer indices shifted by each row's left padding.
    ``position_ids`` = cumsum(mask) - 1 clamped at 0, so a left-padded row gets the same
    positions as the unpadded prompt.
    """
    if not prompts:
        raise ValueError("pad_batch needs at least one prompt")
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', not {side!r}")
    width = max(len(p.input_ids) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    answers: list[int] = []
    for row, prompt in enumerate(prompts):
        n = len(prompt.input_ids)
        start = width - n if side == "left" else 0
        input_ids[row, start : start + n] = torch.tensor(prompt.input_ids, dtype=torch.long)
        mask[row, start : start + n] = 1
        answers.append(start + prompt.answer_index)
    position_ids = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    return input_ids, mask, position_ids, answers
