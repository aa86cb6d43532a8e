"""Serving cost of a bake: tokens/s baked vs unbaked, in transformers and in llama.cpp, and the
GGUF bake's time against a plain copy of the file. All in one process, variants interleaved
(every repeat runs each variant once, in turn), so load on a shared machine hits them alike.

transformers (float32, batch 1, greedy, ``--new-tokens`` tokens after a chat prompt,
``generate`` with EOS ignored so every run makes the same number of tokens):

- ``unbaked``: the source checkpoint;
- ``baked (export)``: ``caa-bake export``'s checkpoint, reloaded from disk: ``mlp_bias: true``
  so every block's gate/up/down projections carry a bias (90 on SmolLM2, 89 of them zero);
- ``down_proj bias only``: the source with one ``down_proj.bias`` (m x v) at the baked block
  and no other bias: what a checkpoint with only the needed bias would cost, if a loader
  could express it (stock Llama configs cannot: ``mlp_bias`` switches all three).

llama.cpp (llama-cpp-python, the embedded Q4_1 GGUF): the source vs the baked GGUF (one F32
``ffn_down`` bias), ``--new-tokens`` greedy tokens one at a time after the same prompt
(prompt processing timed separately).

GGUF bake: ``bake_gguf`` (header parse, sha256 of the source, streaming write, fsync, atomic
rename) vs ``shutil.copyfile`` + fsync of the same file, same folder.

    .venv/bin/python -m benchmarks.serving [--repeats 7] [--new-tokens 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caa_bake.bake import Bake, GgufRunner, bake_gguf, export_checkpoint, gguf_model_ref
from caa_bake.models import find_gguf
from caa_bake.steering import SteeringVector

LAYER, MULT = 13, -1.0


def _stats(times: list[float], tokens: int) -> tuple[float, float, float]:
    """(median tokens/s, min, max) over repeats."""
    rates = [tokens / t for t in times]
    return statistics.median(rates), min(rates), max(rates)


def _line(name: str, times: list[float], tokens: int, base: float | None) -> str:
    med, lo, hi = _stats(times, tokens)
    ratio = f"  {med / base:.3f}x" if base else ""
    return f"  {name:<24} {med:8.1f} tok/s  (min {lo:.1f}, max {hi:.1f}){ratio}"


def _interleaved(variants: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():
        run()  # warm-up
    for _ in range(repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def _ratios(times: dict[str, list[float]], base: str) -> str:
    """Per-repeat ratios (variant time over base time, inverted: tokens/s ratio) spread."""
    out = []
    for name, values in times.items():
        if name == base:
            continue
        per = [b / v for b, v in zip(times[base], values, strict=True)]
        out.append(
            f"  {name}: per-repeat tok/s ratio median {statistics.median(per):.3f} "
            f"(min {min(per):.3f}, max {max(per):.3f})"
        )
    return "\n".join(out)


def _best_ratio(times: dict[str, list[float]], base: str) -> str:
    """Ratio of the fastest runs (the least disturbed by other load on the machine)."""
    return "\n".join(
        f"  {name}: fastest-run tok/s ratio {min(times[base]) / min(values):.3f}"
        for name, values in times.items()
        if name != base
    )


def bias_micro(rounds: int = 7, reps: int = 2000) -> None:
    """One decode step's MLP linears (batch 1) with and without a bias, isolated."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    shapes = {"gate/up 576->1536": (1536, 576), "down 1536->576": (576, 1536)}
    print(f"\nF.linear at batch 1, one token, min over {rounds} rounds of {reps} calls")
    extra = 0.0
    for name, (out_f, in_f) in shapes.items():
        x = torch.randn(1, 1, in_f, generator=gen)
        w, b = torch.randn(out_f, in_f, generator=gen), torch.zeros(out_f)
        best: dict[bool, float] = {}
        for with_bias in (False, True, False, True):
            for _ in range(rounds):
                start = time.perf_counter()
                for _ in range(reps):
                    F.linear(x, w, b if with_bias else None)
                took = (time.perf_counter() - start) / reps
                best[with_bias] = min(best.get(with_bias, took), took)
        cost = best[True] - best[False]
        extra += cost * (2 if name.startswith("gate") else 1)
        print(
            f"  {name}: {best[False] * 1e6:.1f} us without bias, {best[True] * 1e6:.1f} us "
            f"with a zero bias (+{cost * 1e6:.2f} us)"
        )
    print(
        f"  => the 3 biases of one block add {extra * 1e6:.2f} us per token; x 30 blocks = "
        f"{extra * 30 * 1e3:.3f} ms per token"
    )


def transformers_bench(ref: Any, bakes: list[Bake], work: Path, args: Any) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    export = export_checkpoint(ref, bakes, work / "hf-baked", link=True).path
    tok = AutoTokenizer.from_pretrained(str(ref.path))
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Tell me about the moon."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tok(text, return_tensors="pt").input_ids

    def load(path: Path) -> Any:
        model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        return model.eval()

    unbaked, baked, down_only = load(ref.path), load(export), load(ref.path)
    delta = bakes[0].vector[LAYER] * bakes[0].multiplier
    proj = down_only.model.layers[LAYER].mlp.down_proj
    proj.bias = torch.nn.Parameter(delta.to(torch.float32), requires_grad=False)
    n_bias = sum(1 for n, _ in baked.named_parameters() if n.endswith(".bias"))

    def gen(model: Any) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                    do_sample=False,
                    pad_token_id=tok.eos_token_id,
                )

        return run

    times = _interleaved(
        {
            "unbaked": gen(unbaked),
            f"baked (export, {n_bias} biases)": gen(baked),
            "down_proj bias only": gen(down_only),
        },
        args.repeats,
    )
    print(
        f"\ntransformers float32, batch 1, prompt {ids.shape[1]} tokens, "
        f"{args.new_tokens} new tokens, torch threads {torch.get_num_threads()}, "
        f"{args.repeats} repeats"
    )
    base = _stats(times["unbaked"], args.new_tokens)[0]
    for name, values in times.items():
        print(_line(name, values, args.new_tokens, None if name == "unbaked" else base))
    print(_ratios(times, "unbaked"))
    print(_best_ratio(times, "unbaked"))
    bias_micro()


def llama_bench(source: Path, baked: Path, args: Any) -> None:
    prompt = "<|im_start|>user\nTell me about the moon.<|im_end|>\n<|im_start|>assistant\n"
    runners = {
        name: GgufRunner(path, n_ctx=256, f32_cache=False, threads=args.threads)
        for name, path in (("unbaked Q4_1", source), ("baked Q4_1", baked))
    }
    ids = runners["unbaked Q4_1"].tokenize(prompt)
    prompt_times: dict[str, list[float]] = {name: [] for name in runners}

    def gen(name: str) -> Callable[[], None]:
        llm = runners[name].llm

        def run() -> None:
            llm.reset()
            start = time.perf_counter()
            llm.eval(ids)
            prompt_times[name].append(time.perf_counter() - start)
            for _ in range(args.new_tokens):
                token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
                llm.eval([token])

        return run

    times = _interleaved({name: gen(name) for name in runners}, args.repeats)
    print(
        f"\nllama.cpp (llama-cpp-python), Q4_1, f16 KV cache (its default), prompt {len(ids)} "
        f"tokens + {args.new_tokens} greedy tokens, threads {args.threads}, "
        f"{args.repeats} repeats (times include the prompt)"
    )
    base = _stats(times["unbaked Q4_1"], args.new_tokens)[0]
    for name, values in times.items():
        print(_line(name, values, args.new_tokens, None if name.startswith("unbaked") else base))
    print(_ratios(times, "unbaked Q4_1"))
    print(_best_ratio(times, "unbaked Q4_1"))
    for name, values in prompt_times.items():
        values = values[1:]  # drop the warm-up
        print(f"  prompt processing {name}: median {statistics.median(values) * 1e3:.1f} ms")
    for runner in runners.values():
        runner.close()


def bake_bench(source: Path, ref: Any, bakes: list[Bake], work: Path, repeats: int) -> Path:
    bake_times, copy_times = [], []
    out = work / "baked.gguf"
    for _ in range(repeats):
        start = time.perf_counter()
        bake_gguf(source, bakes, out, ref=ref, force=True)
        bake_times.append(time.perf_counter() - start)
        copy = work / "copy.gguf"
        start = time.perf_counter()
        shutil.copyfile(source, copy)
        with copy.open("rb+") as fh:
            os.fsync(fh.fileno())
        copy_times.append(time.perf_counter() - start)
        copy.unlink()
    size = source.stat().st_size / 2**20
    med_b, med_c = statistics.median(bake_times), statistics.median(copy_times)
    print(f"\nGGUF bake of {source.name} ({size:.0f} MiB), {repeats} repeats, warm page cache")
    print(
        f"  bake_gguf (parse + sha256 + write + fsync): median {med_b:.2f} s "
        f"(min {min(bake_times):.2f}, max {max(bake_times):.2f})"
    )
    print(
        f"  copyfile + fsync:                          median {med_c:.2f} s "
        f"(min {min(copy_times):.2f}, max {max(copy_times):.2f})"
    )
    print(f"  bake / copy: {med_b / med_c:.2f}x")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch and llama.cpp threads")
    parser.add_argument("--skip", default="", help="comma list of: transformers,llama,bake")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    source = find_gguf()
    ref, _digest = gguf_model_ref(source)
    gen = torch.Generator().manual_seed(0)
    vec = SteeringVector(
        {LAYER: torch.randn(576, generator=gen)}, {"weights_fingerprint": ref.weights_fingerprint}
    )
    bakes = [Bake("refusal", LAYER, MULT, vec)]
    with tempfile.TemporaryDirectory(prefix="caa-bench-") as tmp:
        work = Path(tmp)
        baked = bake_bench(source, ref, bakes, work, 5 if "bake" not in skip else 1)
        if "llama" not in skip:
            llama_bench(source, baked, args)
        if "transformers" not in skip:
            transformers_bench(ref, bakes, work, args)


if __name__ == "__main__":
    main()
