"""Writes tests/fixtures/parquet/: dialogue files made by pyarrow, each with one extra
column of a type gatt does not read (binary, decimal, float16, uint8, date, timestamp,
time, duration, fixed-size list, map, dictionary, large string, struct), and one whose
`messages` column has the wrong type. `cargo test` reads them (tests/cli_faults.rs);
rerun this only to regenerate them:

    python3 -m venv /tmp/pa && /tmp/pa/bin/pip install pyarrow numpy
    /tmp/pa/bin/python scripts/compat/make_parquet_fixtures.py
"""

import datetime
import decimal
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "parquet"
OUT.mkdir(parents=True, exist_ok=True)
msgs = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]] * 2
base = {"id": pa.array(["a", "b"]), "messages": pa.array(msgs)}
extras = {
    "bin": pa.array([b"x", b"y"], pa.binary()),
    "dec": pa.array([decimal.Decimal("1.5"), decimal.Decimal("2.5")], pa.decimal128(5, 2)),
    "f16": pa.array(np.array([1.0, 2.0], dtype=np.float16), pa.float16()),
    "u8": pa.array([1, 2], pa.uint8()),
    "date": pa.array([datetime.date(2020, 1, 1)] * 2, pa.date32()),
    "ts": pa.array([datetime.datetime(2020, 1, 1)] * 2, pa.timestamp("us")),
    "time": pa.array([datetime.time(1, 2)] * 2, pa.time64("us")),
    "dur": pa.array([datetime.timedelta(seconds=1)] * 2, pa.duration("s")),
    "fsl": pa.array([[1, 2], [3, 4]], pa.list_(pa.int32(), 2)),
    "map": pa.array([[("a", 1)], [("b", 2)]], pa.map_(pa.string(), pa.int32())),
    "dict": pa.array(["x", "y"]).dictionary_encode(),
    "lstr": pa.array(["x", "y"], pa.large_string()),
    "nested": pa.array([{"a": [1]}, {"a": [2]}]),
}
for name, column in extras.items():
    pq.write_table(pa.table({**base, name: column}), OUT / f"extra_{name}.parquet")
pq.write_table(
    pa.table({"id": pa.array(["a", "b"]), "messages": pa.array([1.0, 2.0])}),
    OUT / "bad_messages_type.parquet",
)
print(f"wrote {len(extras) + 1} files to {OUT}")
