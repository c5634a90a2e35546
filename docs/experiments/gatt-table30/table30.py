#!/usr/bin/env python3
"""The Table-30-style summary of a `gatt eval` run: per constraint kind and model, the
adherence at each turn the kind was decided (figure and hobby: their probe turns, which
alternate; language: turns 1, 2, 4, 6, 10 and 20), with 95% Wilson intervals from `report.json`, and pooled over turns 1-2 and 6-20 with an interval over
dialogues (bootstrap, at least the per-dialogue Wilson) from `scores.jsonl` (scripts/experiments/pooled.py).

    docs/experiments/gatt-table30/table30.py EVAL_DIR [EVAL_DIR...] > table30.md

Several folders: evaluations of the same dialogues (same seed and flags) by different
models, e.g. the base and a first fine-tune in one run and a later fine-tune alone; their
models are listed in the order given (a model name already listed is not repeated).
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../../scripts/experiments"))
from pooled import interval, pooled, read_scores  # noqa: E402

KINDS = ["figure", "hobby", "language"]


def main():
    models, by_kind, rows = [], [], []
    for d in sys.argv[1:]:
        report = json.load(open(os.path.join(d, "report.json")))
        new = [m for m in report["models"] if m not in models]
        models += new
        by_kind += [c for c in report["by_kind"] if c["model"] in new]
        rows += [r for r in read_scores(os.path.join(d, "scores.jsonl")) if r["model"] in new]
    cells = {(c["model"], c["kind"], c["turn"]): c for c in by_kind}
    for kind in KINDS:
        # The turns this kind was decided at (figure and hobby: their probe turns).
        decided = [c["turn"] for c in by_kind
                   if c["kind"] == kind and c["n_pass"] + c["n_fail"] > 0]
        if not decided:
            continue  # a kind this evaluation did not instruct
        turns = sorted(set(decided))
        if kind == "language":
            turns = [t for t in turns if t in (1, 2, 4, 6, 10, 20)]
        head = ["model"] + [f"turn {t}" for t in turns] + ["turns 1-2 pooled", "turns 6-20 pooled"]
        print(f"### {kind}\n")
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for m in models:
            out = [m]
            for t in turns:
                c = cells.get((m, kind, t))
                n = c["n_pass"] + c["n_fail"] if c else 0
                out.append(
                    f"{100 * c['rate']:.0f}% [{100 * c['lo']:.0f}-{100 * c['hi']:.0f}] n={n}"
                    if c and c["rate"] is not None else "– n=0"
                )
            for span in [(1, 2), (6, 20)]:
                per = pooled(rows, kind, span).get(m, {})
                k = sum(p for p, _ in per.values())
                n = sum(x for _, x in per.values())
                if n == 0:
                    out.append("– n=0")
                    continue
                lo, hi = interval(per)
                out.append(f"{100 * k / n:.1f}% [{max(0.0, 100 * lo):.0f}-{100 * hi:.0f}] {k}/{n}")
            print("| " + " | ".join(out) + " |")
        print()


if __name__ == "__main__":
    main()
