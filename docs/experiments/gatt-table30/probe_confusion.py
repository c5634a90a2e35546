#!/usr/bin/env python3
"""Hobby probes answered with the figure: for each model of an evaluation, how many
replies to a hobby probe pass the hobby check, and how many name the dialogue's figure
instead (its full name or its last word, case-insensitive); the same for figure probes
and the hobby's name.

    probe_confusion.py EVAL_DIR [EVAL_DIR...]

Each EVAL_DIR holds `scores.jsonl` (or `scores.jsonl.xz`) and `dialogues-MODEL.jsonl` (or
`.jsonl.xz`) of a `gatt eval` run; several folders are read one after the other (a model
already counted is not counted again). Prints a Markdown table.
"""
import json
import lzma
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../../scripts/experiments"))
from pooled import read_scores  # noqa: E402


def lines(path):
    """A dialogues file, plain or as `.xz` beside it."""
    if os.path.exists(path):
        return open(path, encoding="utf-8")
    return lzma.open(path + ".xz", "rt", encoding="utf-8")


def names(kind, value):
    v = value.lower()
    return [v, v.split()[-1]] if kind == "figure" else [v]


def main(dirs):
    scores, replies = [], {}
    for d in dirs:
        here = read_scores(os.path.join(d, "scores.jsonl"))
        counted = {s["model"] for s in scores}
        new = sorted({s["model"] for s in here} - counted)
        scores += [s for s in here if s["model"] in new]
        for model in new:
            for l in lines(os.path.join(d, f"dialogues-{model}.jsonl")):
                dialogue = json.loads(l)
                said = [m["content"] for m in dialogue["messages"] if m["role"] == "assistant"]
                replies[(model, dialogue["id"])] = said
    values = {}
    for s in scores:
        values.setdefault(s["dialogue"], {})[s["kind"]] = s["value"]
    other = {"hobby": "figure", "figure": "hobby"}
    rows = {}
    for s in scores:
        if s["kind"] not in other or s.get("undecided") == "not_a_probe":
            continue
        o = values[s["dialogue"]].get(other[s["kind"]])
        reply = replies[(s["model"], s["dialogue"])][s["turn"] - 1].lower()
        r = rows.setdefault((s["model"], s["kind"]), [0, 0, 0, 0])
        r[0] += 1
        r[1] += s["verdict"] == "pass"
        if o is not None:
            r[2] += 1
            r[3] += any(n in reply for n in names(other[s["kind"]], o))
    print("| model | probe | replies | pass | names the other constraint instead |")
    print("|---|---|---|---|---|")
    for (model, kind), (n, ok, with_other, named) in sorted(rows.items()):
        share = f"{named}/{with_other} ({100 * named / with_other:.0f}%)" if with_other else "-"
        print(f"| {model} | {kind} | {n} | {ok} ({100 * ok / n:.0f}%) | {share} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
