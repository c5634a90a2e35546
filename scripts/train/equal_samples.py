#!/usr/bin/env python3
"""Equal-length training samples for the speed benchmark (run_train_bench.sh).

    equal_samples.py masked.parquet LENGTH > equal.jsonl

Keeps the samples of a `gatt mask` Parquet file that hold at least LENGTH tokens, cut to
their first LENGTH tokens (input_ids and labels alike), and drops those left with fewer
than 8 loss tokens (labels other than -100). Every batch then holds the same number of
tokens in both tools, with no padding in either: a ratio of tokens/s compares the same
work. Needs pyarrow.
"""
import json
import sys

import pyarrow.parquet as pq

path, length = sys.argv[1], int(sys.argv[2])
table = pq.read_table(path, columns=["input_ids", "labels"])
kept = 0
for ids, labels in zip(table.column("input_ids").to_pylist(), table.column("labels").to_pylist()):
    if len(ids) < length:
        continue
    ids, labels = ids[:length], labels[:length]
    if sum(1 for l in labels if l != -100) < 8:
        continue
    print(json.dumps({"input_ids": ids, "labels": labels}))
    kept += 1
print(f"{kept} samples of {length} tokens", file=sys.stderr)
