#!/usr/bin/env python3
"""Counts the kept replies of `gatt synth` runs that name the instruction's figure.

Usage: figure_naming.py RUN_DIR [RUN_DIR ...]   (each holding dialogues.jsonl)

For each run: the replies as sampled (`meta.augmented`), split into probe turns
(`meta.probe_turns`) and other turns; a reply names the figure when the folded words of
its code-free text hold the figure's name or an alias as a run of whole words (case and
accents aside), as the evaluator's figure check reads it. Prints counts with 95% Wilson
intervals, and the judge's counts from run.json when it has them.
"""
import json
import math
import re
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def fold(text):
    return "".join(
        c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c)
    ).lower()


def words(text):
    text = re.sub(r"```.*?(```|$)", " ", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", " ", text)
    return re.findall(r"[^\W_]+", fold(text))


def names(text, phrases):
    w = words(text)
    for p in phrases:
        pw = words(p)
        n = len(pw)
        if n and any(w[i : i + n] == pw for i in range(len(w) - n + 1)):
            return True
    return False


def wilson(k, n, z=1.96):
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def main():
    figures = {
        f["name"]: [f["name"], *f.get("aliases", [])]
        for f in json.loads((ROOT / "templates/catalogs/figures.json").read_text())
    }
    for run in sys.argv[1:]:
        run = Path(run)
        probe = [0, 0]
        other = [0, 0]
        kept = 0
        for line in (run / "dialogues.jsonl").read_text().splitlines():
            d = json.loads(line)
            kept += 1
            figure = next(c["value"] for c in d["constraints"] if c["kind"] == "figure")
            probes = set(d["meta"].get("probe_turns") or [])
            replies = [m for m in d["meta"]["augmented"] if m["role"] == "assistant"]
            for t, m in enumerate(replies, start=1):
                hit = names(m["content"], figures.get(figure, [figure]))
                bucket = probe if t in probes else other
                bucket[0] += hit
                bucket[1] += 1
        manifest = json.loads((run / "run.json").read_text())
        gate = manifest.get("gate") or {}
        out = {"run": str(run), "kept": kept, "planned": gate.get("dialogues")}
        for name, (k, n) in (("probe", probe), ("other", other)):
            lo, hi = wilson(k, n)
            out[name] = f"{k} of {n} ({100 * k / max(n, 1):.0f}%, 95% CI {100 * lo:.0f}-{100 * hi:.0f}%)"
        out["judge"] = gate.get("judge")
        out["seconds"] = manifest.get("seconds")
        print(json.dumps(out))


if __name__ == "__main__":
    main()
