"""Extraction speed: a reference-style loop against caa-bake, in one run.

The baseline does what the CAA reference code does: one prompt at a time (batch 1), the
full forward pass through every block and the LM head, a hook on *every* block keeping its
output, and the answer-letter activation read from block L's saved output. caa-bake
batches with padding and stops after block L. Both run on the same model, data and layer.

    .venv/bin/python benchmarks/extract.py [--behavior refusal] [--layer 13] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

import torch
from torch import nn

from benchmarks.measure import measure
from caa_bake.data.datasets import ContrastPair, load_pairs
from caa_bake.models.blocks import decoder_blocks
from caa_bake.models.loading import load_model, resolve_model
from caa_bake.models.prompts import encode_prompt
from caa_bake.steering import extract


def reference_loop(
    model: nn.Module, tokenizer: object, pairs: list[ContrastPair], layer: int
) -> torch.Tensor:
    """Batch 1, full forward, every block hooked (as the reference implementation)."""
    saved: dict[int, torch.Tensor] = {}
    hooks = []
    for i, block in enumerate(decoder_blocks(model)):

        def keep(_m: nn.Module, _a: object, out: object, i: int = i) -> None:
            hidden = out[0] if isinstance(out, tuple) else out
            assert isinstance(hidden, torch.Tensor)
            saved[i] = hidden.detach()

        hooks.append(block.register_forward_hook(keep))
    diffs = []
    try:
        for pair in pairs:
            acts = []
            for answer in (pair.matching, pair.not_matching):
                enc = encode_prompt(tokenizer, pair.question, answer)  # type: ignore[arg-type]
                with torch.no_grad():
                    model(torch.tensor([enc.input_ids]))
                acts.append(saved[layer][0, enc.answer_index].float())
            diffs.append(acts[0] - acts[1])
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(diffs).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--behavior", default="refusal")
    parser.add_argument("--layer", type=int, default=13)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", default=None)
    parser.add_argument("--pairs", type=int, default=None, help="an evenly spaced subset")
    args = parser.parse_args()
    os.environ.setdefault("CAA_BAKE_QUIET", "1")
    torch.manual_seed(0)

    ref = resolve_model(args.model)
    model, tokenizer = load_model(ref)
    pairs = load_pairs(args.behavior, "generate")
    if args.pairs is not None:
        pairs = pairs[:: max(1, len(pairs) // args.pairs)][: args.pairs]
    n = len(pairs)
    print(
        f"model {ref.model_id}, behavior {args.behavior} ({n} pairs), layer {args.layer}, "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )

    gc.collect()
    with measure() as base_m:
        base_vec = reference_loop(model, tokenizer, pairs, args.layer)
    gc.collect()
    with measure() as ours_m:
        ours = extract.extract_vectors(
            model, tokenizer, pairs, [args.layer], batch_size=args.batch_size
        ).vectors[args.layer]
    gc.collect()
    with measure() as nohead_m:  # the shared chat-template head re-run in every batch
        nohead = extract.extract_vectors(
            model, tokenizer, pairs, [args.layer], batch_size=args.batch_size, share_head=False
        ).vectors[args.layer]
    cos = torch.nn.functional.cosine_similarity(base_vec, ours, dim=0).item()
    rows = [
        ("reference loop (batch 1, full forward)", base_m),
        ("caa-bake, head re-run per batch", nohead_m),
        ("caa-bake extract", ours_m),
    ]
    print(f"{'method':42s} {'wall s':>8s} {'pairs/s':>8s} {'peak RSS MB':>12s}")
    for name, m in rows:
        print(f"{name:42s} {m.wall_s:8.2f} {n / m.wall_s:8.1f} {m.peak_rss_mb:12.0f}")
    print(f"speed-up (reference / caa-bake): {base_m.wall_s / ours_m.wall_s:.2f}x")
    print(f"speed-up (head per batch / head once): {nohead_m.wall_s / ours_m.wall_s:.2f}x")
    print(f"cosine(reference, caa-bake): {cos:.7f}")
    print(f"max |head once - head per batch|: {(ours - nohead).abs().max().item():.3g}")
    print(f"max |difference|: {(base_vec - ours).abs().max().item():.3g}")
    sys.exit(0 if cos >= 0.9999 else 1)


if __name__ == "__main__":
    main()
