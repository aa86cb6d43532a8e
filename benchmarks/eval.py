"""Evaluation speed: the whole caa-bake suite through lm-eval (batched) against a batch-1 loop.

Both compute, for every item of the 7 behavior A/B test sets, MMLU and TruthfulQA, p(A) and
p(B) after the prefilled ``(`` and the normalized score. The baseline is the plain loop a
user would write (one unpadded prompt per forward pass, as the CAA reference evaluates);
caa-bake runs the ``eval_tasks`` through lm-eval's ``HFLM`` with padded batches sorted by
length. Same model object, same items; the per-item scores must agree to 1e-5.

    .venv/bin/python -m benchmarks.eval [--batch-size 32] [--limit N] [--model M]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

import torch
from lm_eval.models.huggingface import HFLM

from benchmarks.measure import measure
from caa_bake.data.behaviors import CAA_BEHAVIORS
from caa_bake.data.datasets import load_ab_eval, load_pairs
from caa_bake.evaluation.common import make_lm
from caa_bake.evaluation.tasks import (
    CAPABILITY_TASKS,
    PromptSetup,
    ab_task,
    prompt_setup,
    run_tasks,
    task_behavior,
)
from caa_bake.models.loading import load_model, resolve_model
from caa_bake.models.prompts import encode_prompt

TOLERANCE = 1e-5
# the published suite: the 7 CAA behaviors' A/B tests, MMLU and TruthfulQA
SUITE = [*(ab_task(b) for b in CAA_BEHAVIORS), *CAPABILITY_TASKS]


def suite_items() -> dict[str, list[tuple[str, str]]]:
    """task -> [(question, target letter)] in file order (index = lm-eval doc id)."""
    items: dict[str, list[tuple[str, str]]] = {}
    for task in SUITE:
        behavior = task_behavior(task)
        if behavior is not None:
            rows = [(p.question, p.matching[1]) for p in load_pairs(behavior, "test")]
        else:
            rows = [(i.question, i.correct[1]) for i in load_ab_eval(CAPABILITY_TASKS[task])]
        items[task] = rows
    return items


def batch1_loop(
    model: torch.nn.Module, tokenizer: object, setup: PromptSetup, items: list[tuple[str, str]]
) -> list[float]:
    """One unpadded forward pass per item; p(target) / (p(A) + p(B)), 0 if target not A/B."""
    a, b = setup.letter_ids["A"], setup.letter_ids["B"]
    scores = []
    for question, target in items:
        enc = encode_prompt(tokenizer, question, "(", style=setup.style)  # type: ignore[arg-type]
        with torch.no_grad():
            logits = model(torch.tensor([enc.input_ids])).logits[0, -1]
        probs = torch.softmax(logits.float(), dim=-1)
        p = {"A": float(probs[a]), "B": float(probs[b])}
        scores.append(p.get(target, 0.0) / (p["A"] + p["B"]))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="items per task (default: all)")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    os.environ.setdefault("CAA_BAKE_QUIET", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")

    ref = resolve_model(args.model)
    model, tokenizer = load_model(ref)
    setup = prompt_setup(tokenizer, model.config)
    items = suite_items()
    flat = [item for task in SUITE for item in items[task]]
    print(
        f"model {ref.model_id}, --limit {args.limit}, torch threads {torch.get_num_threads()},"
        f" lm-eval batch size {args.batch_size}",
        flush=True,
    )
    with torch.no_grad():  # warm-up: first-call allocations out of both timings
        model(torch.tensor([encode_prompt(tokenizer, flat[0][0], "(").input_ids]))
    # and lm-eval's first task build (dataset files to Arrow, YAML parsing) out of the first one
    run_tasks(make_lm(model, tokenizer, args.batch_size), SUITE, setup, limit=1)

    gc.collect()
    with measure() as lm_m:
        lm = make_lm(model, tokenizer, args.batch_size)
        results = run_tasks(lm, SUITE, setup, limit=args.limit)
    # the items lm-eval scored (with --limit, MMLU / TruthfulQA take an evenly spread subset)
    ids = {t: sorted(s.doc_id for s in results[t].samples) for t in SUITE}
    picked = [items[t][i] for t in SUITE for i in ids[t]]
    lm_scores = [
        s.value for task in SUITE for s in sorted(results[task].samples, key=lambda s: s.doc_id)
    ]
    gc.collect()
    with measure() as stock_m:  # lm-eval's own HFLM: full-vocabulary logits at every position
        stock = run_tasks(
            HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size),
            SUITE,
            setup,
            limit=args.limit,
        )
    stock_diff = max(
        abs(a.value - b.value)
        for t in SUITE
        for a, b in zip(stock[t].samples, results[t].samples, strict=True)
    )
    gc.collect()
    with measure() as loop_m:
        loop_scores = batch1_loop(model, tokenizer, setup, picked)
    diff = max(abs(x - y) for x, y in zip(loop_scores, lm_scores, strict=True))
    n = len(picked)
    print(f"{n} items: " + ", ".join(f"{t} {len(v)}" for t, v in ids.items()))
    rows = [
        ("batch-1 loop (transformers)", loop_m),
        (f"lm-eval stock HFLM, batch {args.batch_size}", stock_m),
        (f"caa-bake make_lm, batch {args.batch_size}", lm_m),
    ]
    print(f"{'method':34s} {'wall s':>8s} {'items/s':>8s} {'peak RSS MB':>12s}")
    for name, m in rows:
        print(f"{name:34s} {m.wall_s:8.1f} {n / m.wall_s:8.2f} {m.peak_rss_mb:12.0f}")
    print(f"speed-up (batch-1 loop / caa-bake): {loop_m.wall_s / lm_m.wall_s:.2f}x")
    print(f"speed-up (stock HFLM / caa-bake): {stock_m.wall_s / lm_m.wall_s:.2f}x")
    print(f"max |score difference| stock HFLM vs caa-bake: {stock_diff:.3g}")
    print(f"max |score difference| over {n} items: {diff:.3g}")
    sys.exit(0 if diff <= TOLERANCE else 1)


if __name__ == "__main__":
    main()
