#!/usr/bin/env python3
"""Keeps the dialogues whose every decided check passes under the current checks.

    refilter.py DIALOGUES.jsonl SCORES.jsonl > KEPT.jsonl

SCORES.jsonl is `gatt eval --input DIALOGUES.jsonl --out DIR`'s DIR/scores.jsonl. Used
when the checks changed after a synthesis run (`--min-adherence 1` judged the run's
replies with the checks of its binary): a dialogue with a reply that now fails a check
is left out, and the count goes to stderr.
"""
import json
import sys

dialogues_path, scores_path = sys.argv[1], sys.argv[2]
failed = set()
for line in open(scores_path):
    row = json.loads(line)
    if row["verdict"] == "fail":
        failed.add(row["dialogue"])
kept = 0
total = 0
for line in open(dialogues_path):
    total += 1
    if json.loads(line)["id"] not in failed:
        sys.stdout.write(line)
        kept += 1
print(f"refilter: {kept} of {total} dialogues kept, {total - kept} fail a current check",
      file=sys.stderr)
