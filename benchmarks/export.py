"""Benchmark: ``caa-bake export`` vs ``cp -r`` vs a naive transformers load + edit + save.

Builds a synthetic checkpoint with Llama-2-7B's shapes (32 layers, hidden 4096, intermediate
11008, vocab 32000, float16, 3 shards, ~13.5 GB of random tensors) in a temporary folder,
then measures, in one run and on the same files:

- ``cp -r`` (the floor: copying the files),
- ``caa-bake export`` (streams shards with copy_file_range, fsyncs everything),
- ``caa-bake export --link`` (hard links / reflinks, nothing copied),
- naive: ``AutoModelForCausalLM.from_pretrained`` + in-memory bake + ``save_pretrained``.

Each command runs in its own child process; wall time is measured around it and peak RSS
is the child's ``ru_maxrss``. ``cp -r`` and ``save_pretrained`` do not fsync, the export
does: a ``sync`` right after each command is timed too, and ``+sync`` columns include it.
Every output is deleted after it is measured, and the temporary folder at the end.

Usage::

    .venv/bin/python benchmarks/export.py [--dir /tmp] [--skip-naive] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LAYERS, HIDDEN, INTERMEDIATE, VOCAB = 32, 4096, 11008, 32000
BAKE_LAYER = 13
N_SHARDS = 3
_CHUNK = 32 << 20  # elements generated at a time (64 MB of float16)

_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
wall = time.perf_counter() - start
start = time.perf_counter()
subprocess.run(["sync"], check=True)
sync = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"rc": rc, "wall": wall, "sync": sync, "peak_rss": peak}))
"""

_LIBRARY_LINK = """
import sys, time
from pathlib import Path
from caa_bake.bake.bakes import Bake
from caa_bake.bake.export import export_checkpoint
from caa_bake.models.loading import resolve_model
from caa_bake.steering.vector import SteeringVector
from transformers import AutoConfig  # import before the clock starts, like the modules above
src, vec, out, layer, report = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
start = time.perf_counter()
ref = resolve_model(src)
bakes = [Bake("bench", layer, 1.0, SteeringVector.load(Path(vec)))]
export_checkpoint(ref, bakes, Path(out), link=True)
Path(report).write_text(str(time.perf_counter() - start))
"""

_NAIVE = """
import sys, torch
from transformers import AutoModelForCausalLM
from caa_bake.bake.memory import bake_in_memory
from caa_bake.bake.bakes import Bake
from caa_bake.steering.vector import SteeringVector
src, vec, out, layer = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float16)
bake_in_memory(model, [Bake("bench", layer, 1.0, SteeringVector.load(vec))])
model.save_pretrained(out)
"""


def tensor_shapes() -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every tensor of a Llama-2-7B checkpoint, in the order HF saves them."""
    yield "model.embed_tokens.weight", (VOCAB, HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            yield f"{p}.self_attn.{proj}.weight", (HIDDEN, HIDDEN)
        yield f"{p}.mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)
        yield f"{p}.mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)
        yield f"{p}.mlp.down_proj.weight", (HIDDEN, INTERMEDIATE)
        yield f"{p}.input_layernorm.weight", (HIDDEN,)
        yield f"{p}.post_attention_layernorm.weight", (HIDDEN,)
    yield "model.norm.weight", (HIDDEN,)
    yield "lm_head.weight", (VOCAB, HIDDEN)


def _split(shapes: list[tuple[str, tuple[int, ...]]]) -> list[list[tuple[str, tuple[int, ...]]]]:
    total = sum(int(np.prod(s)) for _, s in shapes)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    done = 0
    for name, shape in shapes:
        if done >= total * len(shards) / N_SHARDS and len(shards) < N_SHARDS:
            shards.append([])
        shards[-1].append((name, shape))
        done += int(np.prod(shape))
    return shards


def _random_f16(rng: np.random.Generator, n: int) -> bytes:
    """``n`` random finite float16 values in (-1, 1), as bytes."""
    bits = rng.integers(0, 0x3C00, size=n, dtype=np.uint16)
    bits |= (rng.integers(0, 2, size=n, dtype=np.uint16) << 15).astype(np.uint16)
    return bits.tobytes()


def write_checkpoint(folder: Path, seed: int = 0) -> int:
    """Write the synthetic float16 checkpoint (3 shards + index + config); returns bytes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    shards = _split(list(tensor_shapes()))
    weight_map: dict[str, str] = {}
    total = 0
    for k, tensors in enumerate(shards, start=1):
        name = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for tensor, shape in tensors:
            size = int(np.prod(shape)) * 2
            header[tensor] = {
                "dtype": "F16",
                "shape": list(shape),
                "data_offsets": [offset, offset + size],
            }
            offset += size
            weight_map[tensor] = name
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        with (folder / name).open("wb") as out:
            out.write(len(text).to_bytes(8, "little") + text)
            remaining = offset // 2
            while remaining:
                n = min(_CHUNK, remaining)
                out.write(_random_f16(rng, n))
                remaining -= n
        total += offset
        print(f"  wrote {name}: {offset / 1e9:.2f} GB", file=sys.stderr, flush=True)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": VOCAB,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "dtype": "float16",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2})
    )
    return total


@dataclass(frozen=True)
class Measurement:
    """One command's wall time, the ``sync`` after it, and its peak RSS."""

    label: str
    wall: float
    sync: float
    peak_rss: int


def measure(label: str, argv: list[str], out: Path) -> Measurement:
    """Run ``argv`` in a child process; delete ``out`` afterwards."""
    subprocess.run(["sync"], check=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAA_BAKE_QUIET": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *argv],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    data = json.loads(result.stdout.strip().splitlines()[-1])
    if data["rc"] != 0:
        raise SystemExit(f"{label} failed (exit {data['rc']}): {result.stderr[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)
    m = Measurement(label, data["wall"], data["sync"], data["peak_rss"])
    rss = m.peak_rss / 2**20
    print(
        f"  {label}: {m.wall:.1f} s (+sync {m.sync:.1f} s), peak RSS {rss:.0f} MiB", file=sys.stderr
    )
    return m


def _vector(folder: Path) -> Path:
    import torch

    from caa_bake.steering.vector import SteeringVector

    gen = torch.Generator().manual_seed(0)
    vec = SteeringVector({BAKE_LAYER: torch.randn(HIDDEN, generator=gen)}, {"behavior": "bench"})
    return vec.save(folder / "bench.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--skip-naive", action="store_true", help="Skip the transformers baseline.")
    parser.add_argument("--keep", action="store_true", help="Keep the synthetic checkpoint.")
    args = parser.parse_args()
    need = 2 * 13.6e9
    free = shutil.disk_usage(args.dir).free
    if free < need:
        raise SystemExit(f"need {need / 1e9:.0f} GB free in {args.dir}, have {free / 1e9:.0f} GB")
    work = Path(tempfile.mkdtemp(prefix="caa-bake-bench-", dir=args.dir))
    try:
        src = work / "llama-2-7b-synthetic"
        print(f"writing the synthetic checkpoint to {src} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        size = write_checkpoint(src)
        print(f"  {size / 1e9:.2f} GB in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        vec = _vector(work)
        py = sys.executable
        export = [py, "-m", "cli.main", "export", "--model", str(src), "--quiet",
                  "--bake", f"{vec}:{BAKE_LAYER}:1", "--no-verify"]  # fmt: skip
        link = [*export, "--link"]
        runs = [
            measure("cp -r", ["cp", "-r", str(src), str(work / "cp")], work / "cp"),
            measure("caa-bake export", [*export, "--out", str(work / "e")], work / "e"),
            measure("caa-bake export --link", [*link, "--out", str(work / "l")], work / "l"),
        ]
        inner = work / "library-seconds.txt"
        library = [py, "-c", _LIBRARY_LINK, str(src), str(vec), str(work / "k"), str(BAKE_LAYER)]
        runs.append(measure("export_checkpoint(link=True)", [*library, str(inner)], work / "k"))
        library_call = float(inner.read_text())
        if not args.skip_naive:
            import psutil

            available = psutil.virtual_memory().available
            if available < 16e9:
                print(f"  naive skipped: {available / 1e9:.1f} GB RAM available", file=sys.stderr)
            else:
                naive = [py, "-c", _NAIVE, str(src), str(vec), str(work / "n"), str(BAKE_LAYER)]
                runs.append(measure("naive load+edit+save_pretrained", naive, work / "n"))
        report(runs, size, library_call)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(runs: list[Measurement], size: int, library_call: float) -> None:
    """Print the table and the ratios."""
    by = {m.label: m for m in runs}
    cp, export, link = by["cp -r"], by["caa-bake export"], by["caa-bake export --link"]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nsynthetic Llama-2-7B float16 checkpoint: {size / 1e9:.2f} GB, 3 shards")
    print(f"load average at the end: {load} ({os.cpu_count()} CPUs)\n")
    print("| method | wall (s) | wall + sync (s) | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for m in runs:
        print(f"| {m.label} | {m.wall:.1f} | {m.wall + m.sync:.1f} | {m.peak_rss / 2**20:.0f} |")
    print()
    with_sync = (export.wall + export.sync) / (cp.wall + cp.sync)
    print(
        f"export / cp -r: {export.wall / cp.wall:.2f}x wall, "
        f"{with_sync:.2f}x wall+sync (target <= 1.2x)"
    )
    print(
        f"export --link: {link.wall:.2f} s for the whole CLI process, {library_call:.2f} s for "
        "the export_checkpoint() call itself (resolve + headers + links + bias shard + fsync; "
        "no interpreter start or imports) (target <= 2 s)"
    )
    print(
        f"peak RSS: export {export.peak_rss / 2**20:.0f} MiB, "
        f"--link {link.peak_rss / 2**20:.0f} MiB (target <= 1024 MiB)"
    )
    if "naive load+edit+save_pretrained" in by:
        naive = by["naive load+edit+save_pretrained"]
        naive_sync = (naive.wall + naive.sync) / (export.wall + export.sync)
        print(
            f"naive / caa-bake export: {naive.wall / export.wall:.1f}x wall, "
            f"{naive_sync:.1f}x wall+sync, {naive.peak_rss / export.peak_rss:.1f}x peak RSS"
        )
        print(
            f"naive / caa-bake export --link: {naive.wall / link.wall:.1f}x wall, "
            f"{naive.peak_rss / link.peak_rss:.1f}x peak RSS"
        )


if __name__ == "__main__":
    main()
