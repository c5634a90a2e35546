#!/usr/bin/env python3
"""Checks `gatt score` against transformers: the same masked samples, the same weights.

Computes each sample's summed cross-entropy over its labels (shifted, -100 ignored, as every Hugging Face
trainer does) with transformers' AutoModelForCausalLM on a Hugging Face folder (`gatt model export M --out
DIR`, the weights gatt scores with), and compares it with the scores `gatt score --out FILE` wrote.

Usage:
    python scripts/compat/check_score.py MODEL_DIR SAMPLES.parquet SCORES.json
Exit status 1 when a sample differs by more than 1e-3 relative.
"""

import json
import sys

import pyarrow.parquet as pq
import torch
from transformers import AutoModelForCausalLM


def main() -> int:
    model_dir, samples_path, scores_path = sys.argv[1:4]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    rows = pq.read_table(samples_path).to_pylist()
    ours = {s["row"]: s for s in json.load(open(scores_path))["scores"]["samples"]}
    worst, total_theirs, total_tokens = 0.0, 0.0, 0
    for row, r in enumerate(rows):
        if row not in ours:
            continue
        ids = torch.tensor([r["input_ids"]])
        labels = torch.tensor([r["labels"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        target = labels[0, 1:]
        nll = torch.nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction="sum").item()
        total_theirs += nll
        total_tokens += int((target != -100).sum())
        rel = abs(nll - ours[row]["nll_sum"]) / max(1.0, abs(nll))
        worst = max(worst, rel)
    print(
        f"{len(ours)} samples, {total_tokens} loss tokens: transformers NLL/token {total_theirs / total_tokens:.6f}; "
        f"largest relative difference per sample {worst:.2e}"
    )
    return 0 if worst <= 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
