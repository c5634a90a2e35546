#!/usr/bin/env python3
"""Reference cross-entropy loss of a Hugging Face causal LM on masked samples.

Used to cross-check the Rust trainer's loss against PyTorch `transformers`.

Run (inside the reference venv, e.g. /work/pyenv):

    python scripts/train/torch_loss.py --model /work/exp/hf-smollm2 \
        --data masked.parquet [--rows N] [--mean token|sample] [--threads K]

Input Parquet columns (others are ignored):
  id         string
  input_ids  list<uint32>
  labels     list<int64>, aligned with input_ids, -100 where there is no loss
             (Hugging Face convention: labels are NOT pre-shifted; position t's
             label is the target of the logits at position t-1).

Computation: float32, torch.no_grad, batch size 1, no padding.  For each row,
logits = model(input_ids).logits; per-token CE between logits[:-1] and
labels[1:] at every position whose shifted label != -100.
  token mean  = sum of all per-token CE / number of such tokens (over all rows)
  sample mean = mean over rows (with >= 1 loss token) of each row's token mean
`loss` is the one selected by --mean (default: token); both are always printed.

Output: one JSON object on stdout, e.g.
  {"loss": ..., "mean": "token", "token_mean": ..., "sample_mean": ...,
   "n_rows": 2, "n_loss_tokens": 17, "rows": [{"id": "a", "loss": ...,
   "loss_sum": ..., "n_loss_tokens": 9, "n_tokens": 30}, ...], ...}
"""
import argparse
import json
import math
import sys
import time


def main():
    ap = argparse.ArgumentParser(description="Reference CE loss on masked samples")
    ap.add_argument("--model", required=True, help="Hugging Face model folder")
    ap.add_argument("--data", required=True, help="masked samples (Parquet)")
    ap.add_argument("--rows", type=int, default=None, help="use the first N rows")
    ap.add_argument("--mean", choices=["token", "sample"], default="token")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    args = ap.parse_args()

    import pyarrow.parquet as pq
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import AutoModelForCausalLM

    if args.threads:
        torch.set_num_threads(args.threads)

    table = pq.read_table(args.data, columns=["id", "input_ids", "labels"])
    if args.rows is not None:
        table = table.slice(0, args.rows)
    ids_col = table.column("id").to_pylist()
    inp_col = table.column("input_ids").to_pylist()
    lab_col = table.column("labels").to_pylist()

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()

    t0 = time.time()
    rows = []
    total_sum = 0.0  # float64 accumulation across rows
    total_n = 0
    with torch.no_grad():
        for rid, inp, lab in zip(ids_col, inp_col, lab_col):
            if len(inp) != len(lab):
                raise SystemExit(f"row {rid}: len(input_ids)={len(inp)} != len(labels)={len(lab)}")
            x = torch.tensor([inp], dtype=torch.long)
            y = torch.tensor(lab, dtype=torch.long)
            logits = model(input_ids=x).logits[0].float()  # [T, V]
            shift_logits = logits[:-1]
            shift_labels = y[1:]
            mask = shift_labels != -100
            n = int(mask.sum())
            if n:
                ce = F.cross_entropy(shift_logits[mask], shift_labels[mask], reduction="none")
                s = float(ce.double().sum())
            else:
                s = 0.0
            total_sum += s
            total_n += n
            rows.append(dict(id=rid, loss=(s / n) if n else None, loss_sum=s,
                             n_loss_tokens=n, n_tokens=len(inp)))

    per_row = [r["loss"] for r in rows if r["n_loss_tokens"] > 0]
    token_mean = total_sum / total_n if total_n else math.nan
    sample_mean = sum(per_row) / len(per_row) if per_row else math.nan
    out = dict(
        loss=token_mean if args.mean == "token" else sample_mean,
        mean=args.mean,
        token_mean=token_mean,
        sample_mean=sample_mean,
        n_rows=len(rows),
        n_rows_with_loss=len(per_row),
        n_loss_tokens=total_n,
        n_tokens=sum(r["n_tokens"] for r in rows),
        rows=rows,
        model=args.model,
        data=args.data,
        dtype="float32",
        seconds=round(time.time() - t0, 3),
        torch=torch.__version__,
        transformers=transformers.__version__,
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
