#!/usr/bin/env python3
"""Summary table of a `run_mask_bench.sh` run (reads the files it leaves in its work folder).

Usage: python scripts/bench/summarize.py WORK_DIR   (prints Markdown tables)
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

TARGET_RATIO = 1.3
TARGET_SPEEDUP = {1: 2.5, 2: 4.5}
TARGET_RSS_GIB = 1.0


def time_v(path: Path) -> dict:
    """Wall seconds and peak RSS from `/usr/bin/time -v` output."""
    text = path.read_text()
    out = {}
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)
    if m:
        secs = 0.0
        for part in m.group(1).split(":"):
            secs = secs * 60 + float(part)
        out["wall_s"] = secs
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if m:
        out["rss_mib"] = int(m.group(1)) / 1024
    m = re.search(r"Exit status: (\d+)", text)
    if m:
        out["exit"] = int(m.group(1))
    return out


def last_json(path: Path) -> dict:
    for line in reversed(path.read_text().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


def main() -> int:
    work = Path(sys.argv[1])
    if not (work / "python.json").exists():
        print("| target | measured | result |")
        print("|---|---|---|")
        stream_row(work)
        return 0
    py = json.loads((work / "python.json").read_text())
    rust = [json.loads(l) for l in (work / "mask_bench.jsonl").read_text().splitlines() if l.startswith("{")]
    summ = {r["threads"]: r for r in rust if r["bench"] == "summary"}
    phases = next((r for r in rust if r["bench"] == "phases"), None)
    py_mask = py["last_turn_mask"]["tokens_per_s"]

    rows = []  # (what, threads, tokens/s, note)
    def spread(r: dict) -> str:
        tps = [x["tokens_per_s"] for x in r["runs"]]
        if len(tps) == 1:
            return "1 run"
        return f"median of {len(tps)} runs ({min(tps) / 1e3:,.0f}k-{max(tps) / 1e3:,.0f}k)"

    rows.append(("Python transformers apply_chat_template(tokenize=True)", 1, py["template_tokenize"]["tokens_per_s"],
                 spread(py["template_tokenize"])))
    rows.append(("Python last-turn mask (prompt + full apply_chat_template, difference)", 1, py_mask,
                 spread(py["last_turn_mask"]) + "; baseline for the speed-ups"))
    for n, r in sorted(py["encode_batch"].items(), key=lambda kv: int(kv[0])):
        rows.append(("Python tokenizers encode_batch of rendered text", int(n), r["tokens_per_s"], ""))
    for n, s in sorted(summ.items()):
        rows.append(("Rust tokenizers encode_batch of rendered text (bare)", n, s["bare_tokens_per_s"], ""))
    for n, s in sorted(summ.items()):
        rows.append(("Rust par_iter of encode(text), results dropped (bare_encode)", n, s["bare_encode_tokens_per_s"], ""))
    for n, s in sorted(summ.items()):
        rows.append((
            "gatt Masker::mask, --policy gatt (in-process)", n, s["mask_tokens_per_s"],
            f"time vs bare {s['ratio_mask_over_bare']:.2f}x, vs bare_encode {s['ratio_mask_over_bare_encode']:.2f}x; "
            f"speed vs Python mask {s['mask_tokens_per_s'] / py_mask:.2f}x",
        ))
    e2e = {}
    for n in sorted(summ):
        runs = []
        for tv in sorted(work.glob(f"gatt_mask_t{n}_r*.time")):
            t = time_v(tv)
            s = last_json(tv.with_suffix(".json"))
            runs.append({"tokens_per_s": s["tokens"] / t["wall_s"], **t, **s})
        if runs:
            tps = statistics.median(r["tokens_per_s"] for r in runs)
            lo, hi = min(r["tokens_per_s"] for r in runs), max(r["tokens_per_s"] for r in runs)
            rss = max(r["rss_mib"] for r in runs)
            e2e[n] = {"tokens_per_s": tps}
            rows.append((
                "`gatt mask` end to end (read JSONL, mask, write Parquet; process wall time)", n, tps,
                f"median of {len(runs)} runs ({lo / 1e3:,.0f}k-{hi / 1e3:,.0f}k); speed vs Python mask "
                f"{tps / py_mask:.2f}x; peak RSS {rss:.0f} MiB",
            ))

    print("| what | threads | tokens/s | notes |")
    print("|---|---:|---:|---|")
    for what, n, tps, note in rows:
        print(f"| {what} | {n} | {tps / 1e3:,.0f}k | {note} |")
    if phases:
        print()
        print(
            f"In-process phases ({phases['threads']} threads): read+parse JSONL {phases['read_parse_s']:.1f} s, "
            f"masks {phases['mask_s']:.1f} s, Parquet writing {phases['parquet_write_s']:.1f} s "
            f"({phases['tokens']:,} tokens)."
        )

    print()
    print("| target | measured | result |")
    print("|---|---|---|")
    for n, s in sorted(summ.items()):
        for key, base in [("ratio_mask_over_bare", "encode_batch"), ("ratio_mask_over_bare_encode", "par_iter encode")]:
            r = s[key]
            print(f"| masks <= {TARGET_RATIO}x bare tokenization ({base}), {n} thread(s) | {r:.2f}x | "
                  f"{'pass' if r <= TARGET_RATIO else 'FAIL'} |")
    for n, s in sorted(summ.items()):
        if n not in TARGET_SPEEDUP:
            continue
        want = TARGET_SPEEDUP[n]
        x = s["mask_tokens_per_s"] / py_mask
        print(f"| >= {want}x Python last-turn mask, {n} thread(s), in-process masks | {x:.2f}x | "
              f"{'pass' if x >= want else 'FAIL'} |")
        if n in e2e:
            x = e2e[n]["tokens_per_s"] / py_mask
            print(f"| >= {want}x Python last-turn mask, {n} thread(s), `gatt mask` end to end | {x:.2f}x | "
                  f"{'pass' if x >= want else 'FAIL'} |")
    stream_row(work)
    return 0


def stream_row(work: Path) -> None:
    st = work / "stream.time"
    if st.exists():
        t = time_v(st)
        s = last_json(work / "stream.json")
        gib = t["rss_mib"] / 1024
        print(f"| streaming: {s.get('records', '?'):,} records, peak RSS < {TARGET_RSS_GIB} GiB | "
              f"{t['rss_mib']:.0f} MiB peak, {t['wall_s']:.0f} s, {s.get('tokens', 0) / t['wall_s'] / 1e3:,.0f}k tokens/s | "
              f"{'pass' if gib < TARGET_RSS_GIB and t.get('exit') == 0 else 'FAIL'} |")


if __name__ == "__main__":
    sys.exit(main())
