#!/usr/bin/env python3
"""Adherence pooled over several turns, with an interval over dialogues.

Turns of one dialogue are not independent (a model that drifts at turn 6 usually stays
drifted), so a Wilson interval over all pooled checks is too narrow. This takes the
scored rows of `gatt eval` (`scores.jsonl`) and gives, per model, the pooled share of
decided checks that passed with a 95% interval over dialogues: the percentile interval
of a bootstrap over dialogues (2,000 resamples, fixed seed: the same input gives the
same interval), widened where needed to the Wilson interval that counts each dialogue
as one observation (the bootstrap collapses to a point when all checks agree).

    scripts/experiments/pooled.py EVAL_DIR/scores.jsonl [--kind K] [--turns 6-20]

--kind: one constraint kind (`figure`, `hobby`, `language`, `user_language`, `format`);
without it, every kind's rows count (each row one check). --turns: an inclusive range.
Undetermined checks are left out, never counted as passes. Prints one Markdown table.
"""
import argparse
import json
import lzma
import math
import os
import random
import sys
from collections import defaultdict


def read_scores(path):
    """The rows of a `scores.jsonl`, or of `scores.jsonl.xz` beside it where the plain
    file is absent (the experiments keep their scores compressed)."""
    if os.path.exists(path) or not os.path.exists(path + ".xz"):
        lines = open(path, encoding="utf-8")
    else:
        lines = lzma.open(path + ".xz", "rt", encoding="utf-8")
    with lines:
        return [json.loads(l) for l in lines if l.strip()]


def parse_turns(s):
    a, _, b = s.partition("-")
    return int(a), int(b or a)


def pooled(rows, kind=None, turns=None):
    """{model: {dialogue: [passes, decided]}} over the rows that match."""
    by_model = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in rows:
        if r["verdict"] == "undetermined" or r.get("judge"):
            continue
        if kind and r["kind"] != kind:
            continue
        if turns and not turns[0] <= r["turn"] <= turns[1]:
            continue
        cell = by_model[r["model"]][r["dialogue"]]
        cell[0] += r["verdict"] == "pass"
        cell[1] += 1
    return by_model


def wilson(p, n, z=1.96):
    """Wilson score interval of a share p observed on n units."""
    if n == 0:
        return (0.0, 1.0)
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (c - h, c + h)


def interval(dialogues):
    """95% interval of the pooled share: the bootstrap's, widened to the Wilson interval
    that counts each dialogue as one observation (the bootstrap alone collapses to a
    point when every check passed or every one failed)."""
    k = sum(p for p, _ in dialogues.values())
    n = sum(x for _, x in dialogues.values())
    b_lo, b_hi = bootstrap(dialogues)
    w_lo, w_hi = wilson(k / n, len(dialogues))
    return min(b_lo, w_lo), max(b_hi, w_hi)


def bootstrap(dialogues, resamples=2000, seed=0):
    """95% percentile interval of the pooled share, dialogues drawn with replacement."""
    cells = list(dialogues.values())
    rng = random.Random(seed)
    shares = []
    for _ in range(resamples):
        k = n = 0
        for _ in cells:
            p, d = cells[rng.randrange(len(cells))]
            k += p
            n += d
        if n:
            shares.append(k / n)
    shares.sort()
    if not shares:
        return (0.0, 0.0)
    return shares[int(0.025 * len(shares))], shares[int(0.975 * len(shares)) - 1]


def table(rows, kind=None, turns=None, label=None):
    models = []
    for r in rows:
        if r["model"] not in models:
            models.append(r["model"])
    data = pooled(rows, kind, turns)
    span = f"turns {turns[0]}-{turns[1]}" if turns else "all turns"
    lines = [
        f"| model | {label or kind or 'all kinds'}, {span} pooled [95% over dialogues] |",
        "|---|---|",
    ]
    for m in models:
        d = data.get(m, {})
        k = sum(p for p, _ in d.values())
        n = sum(n for _, n in d.values())
        if n == 0:
            lines.append(f"| {m} | – (no decided check) |")
            continue
        lo, hi = interval(d)
        lines.append(
            f"| {m} | {100 * k / n:.1f}% [{100 * lo:.0f}-{100 * hi:.0f}] ({k}/{n}, {len(d)} dialogues) |"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scores", help="scores.jsonl of a `gatt eval` output folder (or its .xz)")
    ap.add_argument("--kind")
    ap.add_argument("--turns", type=parse_turns, help="inclusive range, e.g. 6-20")
    args = ap.parse_args()
    try:
        rows = read_scores(args.scores)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"{args.scores}: {e}")
    print(table(rows, args.kind, args.turns))


if __name__ == "__main__":
    main()
