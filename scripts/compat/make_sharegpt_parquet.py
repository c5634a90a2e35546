#!/usr/bin/env python3
"""Write tests/fixtures/sharegpt_system.parquet: ShareGPT records as Hugging Face datasets store them
(`conversations: list<struct<from, value>>` and a top-level `system` string), for gatt's reader tests.

Usage: python scripts/compat/make_sharegpt_parquet.py  (needs pyarrow)
"""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "sharegpt_system.parquet"

rows = [
    {
        "system": "Answer in French.",
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "salut"}],
    },
    {"system": "", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
]
pq.write_table(pa.Table.from_pylist(rows), OUT)
print(f"wrote {OUT}")
