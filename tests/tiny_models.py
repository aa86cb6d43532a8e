"""Tiny random-weight models and a locally trained tokenizer for tests.

Real transformers classes and a real (small) BPE tokenizer with a chat template: no
downloads. Each builder saves a complete safetensors checkpoint to a folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    GraniteConfig,
    LlamaConfig,
    MistralConfig,
    Olmo2Config,
    Olmo3Config,
    OPTConfig,
    PreTrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Choices:\n(A) Yes, I would do that.\n(B) No, I would not.",
    "What is your favorite hobby? As an AI I do not have hobbies.",
    "Can you help me? I cannot assist with illegal or unethical activities.",
    "The quick brown fox jumps over the lazy dog (A) (B) (C) (D)",
    "Statement 1 | A factor group of a non-Abelian group is non-Abelian.",
    "user assistant system <|im_start|> <|im_end|>",
]


def build_tokenizer(
    out_dir: Path | None = None, *, vocab_size: int = 400
) -> PreTrainedTokenizerFast:
    """Train a tiny byte-level BPE tokenizer with a ChatML chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    if out_dir is not None:
        fast.save_pretrained(out_dir)
    return fast


_LLAMA_LIKE: dict[str, object] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}

#: arch -> (config class, tiny defaults); see ``ARCHITECTURES``
_EXTRA: dict[str, tuple[Callable[..., PreTrainedConfig], dict[str, object]]] = {
    "granite": (
        GraniteConfig,
        {
            **_LLAMA_LIKE,
            "residual_multiplier": 0.22,
            "embedding_multiplier": 12.0,
            "attention_multiplier": 0.015625,
            "logits_scaling": 8.0,
        },
    ),
    "mistral": (MistralConfig, {**_LLAMA_LIKE, "sliding_window": None, "head_dim": 8}),
    "qwen2": (
        Qwen2Config,
        {**_LLAMA_LIKE, "use_sliding_window": False, "rope_theta": 1000000.0},
    ),
    "opt": (
        OPTConfig,
        {
            "hidden_size": 32,
            "ffn_dim": 64,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "word_embed_proj_dim": 32,
            "max_position_embeddings": 256,
        },
    ),
    "gemma2": (Gemma2Config, {**_LLAMA_LIKE, "head_dim": 8}),
    "gemma3_text": (Gemma3TextConfig, {**_LLAMA_LIKE, "head_dim": 8}),
    "olmo2": (Olmo2Config, dict(_LLAMA_LIKE)),
    "olmo3": (Olmo3Config, dict(_LLAMA_LIKE)),
}

#: every architecture ``build_model`` knows
ARCHITECTURES: tuple[str, ...] = ("llama", "gpt2", "gpt_neox", *_EXTRA)


def _config(arch: str, vocab: int, ids: dict[str, int], **overrides: object) -> PreTrainedConfig:
    if arch == "llama":
        cfg: PreTrainedConfig = LlamaConfig(
            **ids,
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=False,
        )
    elif arch == "gpt2":
        cfg = GPT2Config(**ids, vocab_size=vocab, n_embd=32, n_layer=4, n_head=4, n_positions=256)
    elif arch == "gpt_neox":
        cfg = GPTNeoXConfig(
            **ids,
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            max_position_embeddings=256,
        )
    elif arch in _EXTRA:
        # more architectures (bake rules): overrides go to the constructor, so derived
        # fields (e.g. Qwen2's layer_types from use_sliding_window) follow them
        cls, base = _EXTRA[arch]
        return cls(**ids, vocab_size=vocab, **{**base, **overrides})
    else:
        raise ValueError(arch)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def build_model(
    arch: str,
    out_dir: Path,
    *,
    seed: int = 0,
    tokenizer: bool = True,
    random_biases: bool = False,
    weights_dtype: torch.dtype = torch.float32,
    max_shard_size: str | None = None,
    **overrides: object,
) -> Path:
    """Save a random ``arch`` model (float32, safetensors) and the tiny tokenizer to ``out_dir``.

    ``random_biases`` fills every bias with random values (transformers initializes them to
    zero, which would hide bias arithmetic mistakes); ``weights_dtype`` stores the weights in
    another dtype; ``max_shard_size`` (e.g. ``"100KB"``) saves an indexed, sharded checkpoint.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    cfg = _config(arch, len(tok), ids, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    if random_biases:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(".bias"):
                    param.copy_(torch.randn_like(param) * 0.1)
    model.to(weights_dtype)
    if max_shard_size is None:
        model.save_pretrained(out_dir)
    else:
        model.save_pretrained(out_dir, max_shard_size=max_shard_size)
    if tokenizer:
        tok.save_pretrained(out_dir)
    return out_dir


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> hex), plus each file's mode.

    Used to prove a folder was not modified (e.g. an export's source) or that two folders
    hold byte-identical files.
    """
    digest: dict[str, str] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = hashlib.sha256(path.read_bytes()).hexdigest()
        digest[str(path.relative_to(folder))] = f"{data} {path.stat().st_mode & 0o777:o}"
    return digest
