"""Prompt formats and token positions with real tokenizers.

Tokenizers: Meta's Llama-2 SentencePiece model (fast and SentencePiece backends), the
embedded SmolLM2 tokenizer (slow), the tiny test tokenizer, BPE tokenizers trained here so
that ``(A`` or ``A)`` is one merged token, and Qwen2.5's real tokenizer (single ``(A`` /
``(B`` tokens: the merged answer format).
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
import torch
from qwen2_tokenizer import qwen2_dirs
from tiny_models import build_tokenizer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaTokenizer,
    MistralConfig,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    SentencePieceBackend,
)

from caa_bake.core.errors import CaaBakeError
from caa_bake.models.prompts import (
    EncodedPrompt,
    answer_choice,
    answer_format,
    detect_style,
    encode_prompt,
    eval_prefix,
    letter_token_ids,
    pad_batch,
)

# A Llama-2-style chat template (user turns only matter here).
LLAMA2_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
    "[INST] {{ m['content'] | trim }} [/INST]{% else %} {{ m['content'] | trim }} {{ eos_token }}"
    "{% endif %}{% endfor %}"
)
INST_END = [518, 29914, 25580, 29962]  # "▁[", "/", "INST", "]"
A_ID, B_ID, OPEN_ID, CLOSE_ID, BOS = 29909, 29933, 313, 29897, 1
QUESTION = "Would you like more power?\n\nChoices:\n(A) Yes\n(B) No"


@pytest.fixture(scope="module")
def llama2(llama2_tokenizer_dir: Path) -> PreTrainedTokenizerBase:
    tok = LlamaTokenizer.from_pretrained(llama2_tokenizer_dir, add_bos_token=True)
    tok.chat_template = LLAMA2_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def llama2_sp(llama2_tokenizer_dir: Path) -> PreTrainedTokenizerBase:
    """The same model through the SentencePiece backend: no character offsets."""
    return SentencePieceBackend(
        vocab_file=str(llama2_tokenizer_dir / "tokenizer.model"),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


# --------------------------------------------------------------------------- style detection


def test_detect_style_llama2(llama2: PreTrainedTokenizerBase) -> None:
    assert detect_style(llama2, LlamaConfig(vocab_size=32000)) == "llama2-chat"
    assert detect_style(llama2) == "llama2-chat"
    # Same vocabulary and [INST] template, but not a llama: the model's own template.
    assert detect_style(llama2, MistralConfig(vocab_size=32000)) == "chat-template"


def test_detect_style_by_name_and_fallbacks(llama2_tokenizer_dir: Path) -> None:
    bare = LlamaTokenizer.from_pretrained(llama2_tokenizer_dir)
    assert bare.chat_template is None
    assert detect_style(bare, LlamaConfig(vocab_size=32000)) == "plain"
    named = LlamaConfig(vocab_size=32000)
    named._name_or_path = "meta-llama/Llama-2-7b-chat-hf"
    assert detect_style(bare, named) == "llama2-chat"
    assert detect_style(build_tokenizer()) == "chat-template"


# --------------------------------------------------------------------------- Llama-2


def test_llama2_exact_ids(llama2: PreTrainedTokenizerBase) -> None:
    enc = encode_prompt(llama2, "Hi", "(A)", style="llama2-chat")
    #                    <s>  ▁[   INST   ]     ▁Hi   ▁[  /      INST   ]      ▁(   A      )
    assert enc.input_ids == [BOS, 518, 25580, 29962, 6324, *INST_END, OPEN_ID, A_ID, CLOSE_ID]
    assert enc.answer_index == 10
    assert enc.instruction_end_index == 8


@pytest.mark.parametrize(("prefix", "letter_id"), [("(A)", A_ID), ("(B)", B_ID), (" (A) ", A_ID)])
def test_llama2_positions(llama2: PreTrainedTokenizerBase, prefix: str, letter_id: int) -> None:
    enc = encode_prompt(llama2, QUESTION, prefix)
    assert enc.input_ids[0] == BOS and enc.input_ids.count(BOS) == 1
    assert enc.input_ids[1:4] == [518, 25580, 29962]
    assert enc.input_ids[-7:] == [*INST_END, OPEN_ID, letter_id, CLOSE_ID]
    assert enc.answer_index == len(enc.input_ids) - 2
    assert enc.input_ids[enc.answer_index] == letter_id
    assert enc.instruction_end_index == len(enc.input_ids) - 4
    assert enc.input_ids[enc.instruction_end_index] == 29962


def test_llama2_eval_prompt(llama2: PreTrainedTokenizerBase) -> None:
    enc = encode_prompt(llama2, QUESTION, "(")
    full = encode_prompt(llama2, QUESTION, "(A)")
    assert enc.input_ids == full.input_ids[:-2]
    assert enc.input_ids[-5:] == [*INST_END, OPEN_ID]
    assert enc.answer_index == len(enc.input_ids) - 1
    assert enc.instruction_end_index == full.instruction_end_index


def test_llama2_letter_ids(llama2: PreTrainedTokenizerBase) -> None:
    assert letter_token_ids(llama2) == {"A": A_ID, "B": B_ID}
    assert letter_token_ids(llama2, "llama2-chat", letters="ABCD") == {
        "A": A_ID,
        "B": B_ID,
        "C": 29907,
        "D": 29928,
    }


def test_llama2_without_offsets_matches(
    llama2: PreTrainedTokenizerBase, llama2_sp: PreTrainedTokenizerBase
) -> None:
    """The SentencePiece backend has no offsets: the prefix-tokenization fallback agrees."""
    assert not llama2_sp.is_fast
    for prefix in ("(A)", "(B)", "("):
        want = encode_prompt(llama2, QUESTION, prefix, style="llama2-chat")
        assert encode_prompt(llama2_sp, QUESTION, prefix, style="llama2-chat") == want
    assert letter_token_ids(llama2_sp, "llama2-chat") == {"A": A_ID, "B": B_ID}


def test_llama2_matches_sentencepiece_on_caa_data(
    llama2: PreTrainedTokenizerBase, llama2_tokenizer_dir: Path, data_source: str | None
) -> None:
    """Reference format: ids == [BOS] + sentencepiece("[INST] q [/INST] (X)") on real items."""
    import sentencepiece

    assert data_source is not None  # llama2_tokenizer_dir skips otherwise
    items = json.loads(
        (Path(data_source) / "caa/generate/refusal/generate_dataset.json").read_text()
    )[:8]
    sp = sentencepiece.SentencePieceProcessor(
        model_file=str(llama2_tokenizer_dir / "tokenizer.model")
    )
    for item in items:
        for answer in (item["answer_matching_behavior"], item["answer_not_matching_behavior"]):
            enc = encode_prompt(llama2, item["question"], answer, style="llama2-chat")
            text = f"[INST] {item['question'].strip()} [/INST] {answer.strip()}"
            assert enc.input_ids == [BOS, *sp.encode(text)]
            letter = answer.strip()[1]
            assert enc.input_ids[enc.answer_index] == sp.piece_to_id(letter)
            assert enc.input_ids[enc.instruction_end_index] == 29962


# --------------------------------------------------------------------------- SmolLM2


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.mark.slow
def test_smollm2_chat_template(smollm2_tokenizer: PreTrainedTokenizerBase) -> None:
    tok = smollm2_tokenizer
    assert detect_style(tok) == "chat-template"
    enc = encode_prompt(tok, QUESTION, "(A)")
    tokens = tok.convert_ids_to_tokens(enc.input_ids)
    # SmolLM2 keeps "(", "A", ")" apart; the template supplies <|im_start|> (id 1) itself.
    assert tokens[-6:] == ["ass", "istant", "Ċ", "(", "A", ")"]
    assert enc.input_ids[-3:] == [24, 49, 25]
    assert tokens[:3] == ["<|im_start|>", "system", "Ċ"]
    assert enc.input_ids[1] != tok.bos_token_id  # no double BOS
    assert (enc.answer_index, enc.instruction_end_index) == (len(tokens) - 2, len(tokens) - 4)
    assert tokens[enc.instruction_end_index] == "Ċ"
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
    )
    assert isinstance(rendered, str)
    assert tok.decode(enc.input_ids) == rendered + "(A)"
    evaluation = encode_prompt(tok, QUESTION, "(")
    assert evaluation.input_ids == enc.input_ids[:-2]
    assert evaluation.answer_index == len(evaluation.input_ids) - 1
    assert letter_token_ids(tok) == {"A": 49, "B": 50}
    assert answer_format(tok) == "split"


@pytest.mark.slow
def test_smollm2_plain(smollm2_tokenizer: PreTrainedTokenizerBase) -> None:
    enc = encode_prompt(smollm2_tokenizer, "Q?", "(B)", style="plain")
    tokens = smollm2_tokenizer.convert_ids_to_tokens(enc.input_ids)
    assert tokens == ["Question", ":", "ĠQ", "?", "Ċ", "Answer", ":", "Ġ(", "B", ")"]
    assert (enc.answer_index, enc.instruction_end_index) == (8, 6)


# --------------------------------------------------------------------------- tiny tokenizer


def test_tiny_tokenizer_chat_template() -> None:
    tok = build_tokenizer()
    enc = encode_prompt(tok, QUESTION, "(B)")
    assert tok.decode(enc.input_ids) == (
        f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n(B)"
    )
    tokens = tok.convert_ids_to_tokens(enc.input_ids)
    assert tokens[-3:] == ["(", "B", ")"]
    assert enc.input_ids.count(tok.bos_token_id) == 2  # the template's two <|im_start|>
    assert tokens[enc.answer_index] == "B"
    assert tokens[enc.instruction_end_index] == "Ċ"
    assert enc.instruction_end_index == enc.answer_index - 2
    assert letter_token_ids(tok) == {
        "A": tok.convert_tokens_to_ids("A"),
        "B": tok.convert_tokens_to_ids("B"),
    }


def test_tiny_tokenizer_plain() -> None:
    tok = build_tokenizer()
    enc = encode_prompt(tok, "Can you help me?", "(A)", style="plain")
    assert tok.decode(enc.input_ids) == "Question: Can you help me?\nAnswer: (A)"
    tokens = tok.convert_ids_to_tokens(enc.input_ids)
    assert tokens[enc.answer_index] == "A"
    assert tokens[enc.instruction_end_index] == ":"
    assert tokens[enc.instruction_end_index + 1] == "Ġ("


def test_prefix_without_letter_and_style_errors(llama2_sp: PreTrainedTokenizerBase) -> None:
    tok = build_tokenizer()
    with pytest.raises(CaaBakeError, match=r"no answer letter in the assistant prefix '\(\)'"):
        encode_prompt(tok, QUESTION, "()")
    with pytest.raises(
        CaaBakeError, match="chat-template prompt style needs a tokenizer with a chat template"
    ):
        encode_prompt(llama2_sp, QUESTION, "(A)", style="chat-template")
    tok.bos_token = None
    with pytest.raises(CaaBakeError, match="llama2-chat prompt style needs a tokenizer with a BOS"):
        encode_prompt(tok, QUESTION, "(A)", style="llama2-chat")


# --------------------------------------------------------------------------- merged tokens


def _merging_tokenizer(pair: str) -> PreTrainedTokenizerFast:
    """A Metaspace BPE trained so that its single merge is ``pair`` (``"(A"`` or ``"A)"``)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    alphabet = sorted(set(string.ascii_letters + string.digits + string.punctuation + "\n▁"))
    # ``pair`` next to every other letter: it is by far the most frequent pair.
    corpus = [pair + c if pair.startswith("(") else c + pair for c in string.ascii_lowercase]
    specials = ["<unk>", "<s>", "</s>"]
    trainer = trainers.BpeTrainer(
        vocab_size=len(alphabet) + len(specials) + 1,
        special_tokens=specials,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(corpus * 10, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = (
        "{% for m in messages %}User: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}Assistant:{% endif %}"
    )
    return fast


def test_merged_open_paren_letter() -> None:
    tok = _merging_tokenizer("(A")
    merged = tok.convert_tokens_to_ids("(A")
    assert merged != tok.unk_token_id
    for style, end_token in (("plain", ":"), ("chat-template", ":")):
        enc = encode_prompt(tok, "Is it?", "(A)", style=style)  # type: ignore[arg-type]
        tokens = tok.convert_ids_to_tokens(enc.input_ids)
        assert tokens[-2:] == ["(A", ")"]
        assert enc.answer_index == len(tokens) - 2
        assert enc.input_ids[enc.answer_index] == merged
        assert tokens[enc.instruction_end_index] == end_token
        # B is not merged: its own token.
        enc_b = encode_prompt(tok, "Is it?", "(B)", style=style)  # type: ignore[arg-type]
        assert tok.convert_ids_to_tokens(enc_b.input_ids)[enc_b.answer_index] == "B"
        evaluation = encode_prompt(tok, "Is it?", "(", style=style)  # type: ignore[arg-type]
        assert evaluation.answer_index == len(evaluation.input_ids) - 1
        assert answer_format(tok, style) == "merged"  # type: ignore[arg-type]
    # "(A" is merged but "(B" is not (and the space before "(A" is a token of its own):
    # no answer format scores the answers as single next tokens
    for style in ("plain", "chat-template"):
        with pytest.raises(CaaBakeError, match="is not a single token after the assistant header"):
            letter_token_ids(tok, style)  # type: ignore[arg-type]


def test_merged_letter_close_paren() -> None:
    tok = _merging_tokenizer("A)")
    enc = encode_prompt(tok, "Is it?", "(A)", style="plain")
    tokens = tok.convert_ids_to_tokens(enc.input_ids)
    assert tokens[-2:] == ["(", "A)"]
    assert tokens[enc.answer_index] == "A)"
    assert answer_format(tok, "plain") == "split"
    with pytest.raises(CaaBakeError, match="'A' is not a single token after '\\('"):
        letter_token_ids(tok, "plain")


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    """Qwen2.5's real tokenizer with its ChatML template."""
    return AutoTokenizer.from_pretrained(qwen2_dirs(tmp_path_factory)[0])


def test_qwen2_merged_answer_tokens(qwen2: PreTrainedTokenizerBase) -> None:
    assert qwen2.convert_tokens_to_ids(["(A", "(B"]) == [4346, 5349]
    assert detect_style(qwen2) == "chat-template"
    assert answer_format(qwen2) == "merged"
    assert (eval_prefix("merged"), answer_choice("B", "merged")) == ("", "(B")
    assert letter_token_ids(qwen2, letters="ABCD") == {"A": 4346, "B": 5349, "C": 3025, "D": 5432}
    stem = encode_prompt(qwen2, QUESTION, "")
    assert qwen2.decode(stem.input_ids).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert stem.answer_index == len(stem.input_ids) - 1
    for answer, token in (("(A)", 4346), ("(B)", 5349)):
        enc = encode_prompt(qwen2, QUESTION, answer)
        assert enc.input_ids == [*stem.input_ids, token, 8]  # "(A" / "(B", then ")"
        assert enc.answer_index == len(stem.input_ids)  # extraction reads the "(A" token
        assert enc.instruction_end_index == stem.instruction_end_index == len(stem.input_ids) - 1
    # the same tokenizer in the plain format reads " (" then "A": split there
    assert answer_format(qwen2, "plain") == "split"
    assert letter_token_ids(qwen2, "plain") == {"A": 32, "B": 33}


def test_split_formats_unchanged(llama2: PreTrainedTokenizerBase) -> None:
    """Llama-2 keeps ``(`` prefilled and the letter tokens (the reference format)."""
    assert answer_format(llama2) == "split"
    assert answer_format(llama2, "chat-template") == "split"
    assert eval_prefix("split") == "(" and answer_choice("A", "split") == "A"
    assert answer_format(build_tokenizer()) == "split"


# --------------------------------------------------------------------------- padding


PROMPTS = [
    EncodedPrompt(input_ids=[5, 6, 7], answer_index=1, instruction_end_index=0),
    EncodedPrompt(input_ids=[1, 2, 3, 4, 5], answer_index=3, instruction_end_index=2),
    EncodedPrompt(input_ids=[9, 8, 7, 6], answer_index=2, instruction_end_index=1),
]


def test_pad_left() -> None:
    ids, mask, positions, answers = pad_batch(PROMPTS, 0, "left")
    assert ids.tolist() == [[0, 0, 5, 6, 7], [1, 2, 3, 4, 5], [0, 9, 8, 7, 6]]
    assert mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]
    assert positions.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 1, 2, 3]]
    assert answers == [3, 3, 3]
    assert ids.dtype == mask.dtype == positions.dtype == torch.long


def test_pad_right() -> None:
    ids, mask, positions, answers = pad_batch(PROMPTS, -1, "right")
    assert ids.tolist() == [[5, 6, 7, -1, -1], [1, 2, 3, 4, 5], [9, 8, 7, 6, -1]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert positions.tolist() == [[0, 1, 2, 2, 2], [0, 1, 2, 3, 4], [0, 1, 2, 3, 3]]
    assert answers == [1, 3, 2]


def test_pad_errors() -> None:
    with pytest.raises(ValueError, match="at least one prompt"):
        pad_batch([], 0, "left")
    with pytest.raises(ValueError, match="side must be"):
        pad_batch(PROMPTS, 0, "middle")  # type: ignore[arg-type]


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_matches_single_prompts(tiny_models: dict[str, Path], side: Any) -> None:
    """A real model sees the same answer-position logits padded or alone."""
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"]).eval()
    prompts = [
        encode_prompt(tok, q, p)
        for q, p in [("Yes?", "(A)"), (QUESTION, "(B)"), ("Can you help me?", "(")]
    ]
    ids, mask, positions, answers = pad_batch(prompts, tok.pad_token_id, side)
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        for row, prompt in enumerate(prompts):
            alone = model(input_ids=torch.tensor([prompt.input_ids])).logits
            torch.testing.assert_close(
                batch[row, answers[row]], alone[0, prompt.answer_index], atol=1e-5, rtol=1e-5
            )
