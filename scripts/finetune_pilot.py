"""Pilot for the LoRA finetuning baseline: does a short run move the A/B answer at all?

Trains a fresh peft LoRA adapter (r 16, alpha 32, every linear layer, as ``caa-bake finetune
--lora``), or with a ``full-`` setting every weight, for ``--steps`` batch-1 steps on the
first items of the seeded shuffled generate split (the order ``caa-bake finetune`` uses,
seed 0), once per optimizer setting, and reports
p_match (p(matching) / (p(matching) + p(other)) at the answer position) on the last 16 items
of that order, which no setting trains on. The test split is not used.

    .venv/bin/python scripts/finetune_pilot.py --model qwen2.5-coder-1.5b-instruct \\
        --behavior refusal --steps 24 sgd:1e-4 adamw:1e-4 [full-sgd:1e-4]

Each setting prints its seconds per step (float32, this process's torch threads) beside the
held-out p_match, so the cost of full finetuning vs LoRA is measured in the same run.

Used once on 2026-11-30 to choose the optimizer of the Qwen finetuning baseline on CPU
(docs/results/qwen2.5-1.5b/README.md, section 5).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from caa_bake.data.datasets import load_pairs
from caa_bake.finetune.data import Batch, TrainExample, build_examples, collate
from caa_bake.models.loading import load_model, resolve_model
from caa_bake.models.prompts import detect_style

HELD_OUT = 16


def answer_logits(model: Any, batch: Batch) -> torch.Tensor:
    """Next-token logits at the end of each (left-padded) prompt: ``[rows, vocab]``."""
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        logits_to_keep=1,
    )
    return out.logits[:, -1].float()


def p_match(
    model: Any, pos: Sequence[TrainExample], neg: Sequence[TrainExample], items: Sequence[int]
) -> float:
    """Mean p(pos target) / (p(pos target) + p(neg target)) over ``items``."""
    model.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(items), 8):
            chunk = list(items[start : start + 8])
            batch = collate([pos[i] for i in chunk], pad_id=0)
            probs = answer_logits(model, batch).softmax(-1)
            for row, i in enumerate(chunk):
                match, other = probs[row, pos[i].target_id], probs[row, neg[i].target_id]
                scores.append(float(match / (match + other)))
    model.train()
    return sum(scores) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--behavior", default="refusal")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument(
        "settings", nargs="+", help="[full-]optimizer:lr, e.g. sgd:1e-4 adamw:1e-4 full-sgd:1e-4"
    )
    args = parser.parse_args()
    from peft import LoraConfig, get_peft_model

    ref = resolve_model(args.model)
    pairs = load_pairs(args.behavior, "generate")
    _model, tokenizer = load_model(ref)
    del _model
    style = detect_style(tokenizer)
    pos, _ = build_examples(tokenizer, pairs, "pos", style)
    neg, _ = build_examples(tokenizer, pairs, "neg", style)
    order = list(range(len(pos)))
    random.Random(0).shuffle(order)
    train, held = order[: args.steps], order[-HELD_OUT:]
    base_score: float | None = None
    for setting in args.settings:
        name, lr_text = setting.split(":")
        lr, full = float(lr_text), name.startswith("full-")
        name = name.removeprefix("full-")
        model: Any = load_model(ref)[0]
        if base_score is None:
            base_score = p_match(model, pos, neg, held)
            print(f"base model: held-out p_match {base_score:.4f} ({HELD_OUT} items)", flush=True)
        torch.manual_seed(0)
        if not full:
            config = LoraConfig(
                r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"
            )
            model = get_peft_model(model, config)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = (
            torch.optim.SGD(params, lr=lr)
            if name == "sgd"
            else torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        )
        start, losses = time.perf_counter(), []
        for i in train:
            batch = collate([pos[i]], pad_id=0)
            loss = F.cross_entropy(answer_logits(model, batch), batch.targets)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(float(loss.detach()))
        k = max(1, args.steps // 3)
        wall = time.perf_counter() - start
        print(
            f"{setting}: {args.steps} steps, {wall / args.steps:.1f} s/step, loss "
            f"{sum(losses[:k]) / k:.3f} (first {k}) -> {sum(losses[-k:]) / k:.3f} (last {k}), "
            f"held-out p_match {p_match(model, pos, neg, held):.4f}",
            flush=True,
        )
        del model, opt


if __name__ == "__main__":
    main()
