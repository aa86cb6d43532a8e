"""Mean log-odds of the matching answer per variant, from an eval run's ``samples.jsonl``.

p_match saturates at 0 and 1, so a finetuned model that answers with p ≈ 1 hides whether
steering still moves it. The log-odds log p(matching) - log p(other) does not saturate.
Per (task, finetuning state, kind, multiplier) this prints the mean and the median over the
items whose matching answer is A or B, and how decided the answers are whichever way they go:
the mean of |log p(A) - log p(B)| (0: indifferent between the letters).

    .venv/bin/python scripts/log_odds.py results/<run>/samples.jsonl
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

FLOOR = 1e-300  # a probability of exactly 0 (underflow) would make the log-odds infinite


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: scripts/log_odds.py results/<run>/samples.jsonl")
    groups: dict[tuple[str, str, str, float], list[float]] = defaultdict(list)
    for line in Path(sys.argv[1]).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["target"] not in ("A", "B"):
            continue
        match, other = (
            (row["p_a"], row["p_b"]) if row["target"] == "A" else (row["p_b"], row["p_a"])
        )
        value = math.log(max(match, FLOOR)) - math.log(max(other, FLOOR))
        groups[(row["task"], row["state"], row["kind"], row["multiplier"])].append(value)
    print("| task | finetuning | kind | m | items | mean log-odds | median | mean abs |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for (task, state, kind, mult), values in sorted(groups.items()):
        print(
            f"| {task} | {state} | {kind} | {mult:g} | {len(values)} | "
            f"{statistics.fmean(values):.2f} | {statistics.median(values):.2f} | "
            f"{statistics.fmean(abs(v) for v in values):.2f} |"
        )


if __name__ == "__main__":
    main()
