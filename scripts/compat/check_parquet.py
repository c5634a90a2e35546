"""Checks that gatt's Parquet files load in the Python ecosystem (issue 17).

Trainers (TRL, axolotl, LLaMA-Factory) read datasets with Hugging Face `datasets`,
which before 4.x has no dtype for Arrow's `string_view` and fails on `large_list`;
pyarrow's `Table.filter` fails on `string_view`. gatt's files must store `string` and
`list` (32-bit offsets). For each file this prints the stored Arrow schema, checks that
no column is a view or large type, filters the table on a string column with pyarrow,
and loads it with `datasets.load_dataset("parquet", ...)` when `datasets` is installed.
It exits 1 if any check fails.

How to run (from the repository root; the CLI test fixtures need no model):

    python3 -m venv /tmp/compat-venv
    /tmp/compat-venv/bin/pip install pyarrow 'datasets==2.21.*'
    cargo run -p gatt --example dialogues_to_parquet -- \
        tests/fixtures/golden/dialogues.jsonl /tmp/dialogues.parquet
    cargo run -- mask --input tests/fixtures/golden/dialogues.jsonl \
        --out /tmp/masked.parquet --on-error skip \
        --tokenizer tests/fixtures/golden/smollm2_tokenizer.json \
        --template tests/fixtures/golden/smollm2_chat_template.jinja
    /tmp/compat-venv/bin/python scripts/compat/check_parquet.py \
        /tmp/dialogues.parquet /tmp/masked.parquet

Last run with pyarrow 26.0.1 and datasets 2.21.0: every check passed on the fixture
files and on one-record files; files from before issue 17 failed all three.
"""

import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def view_or_large(t):
    """Whether type `t`, or a type inside it, is a view or large (64-bit offset) type."""
    if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
        return True
    if pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        return True
    if pa.types.is_large_list(t):
        return True
    if pa.types.is_list(t) or pa.types.is_fixed_size_list(t):
        return view_or_large(t.value_type)
    if pa.types.is_struct(t):
        return any(view_or_large(t.field(i).type) for i in range(t.num_fields))
    return False


def check(path):
    """Runs the checks on one file; returns the number that failed."""
    failed = 0
    print(f"== {path}")
    schema = pq.read_schema(path)
    print(schema.to_string(show_schema_metadata=False))
    bad = [f.name for f in schema if view_or_large(f.type)]
    if bad:
        print(f"FAIL: view or large types in {bad}")
        failed += 1
    else:
        print("ok: string and list types only")

    table = pq.read_table(path)
    try:
        kept = table.filter(pc.equal(table["id"], table["id"][0]))
        print(f"ok: Table.filter on `id`: {kept.num_rows} of {table.num_rows} rows")
    except Exception as e:  # noqa: BLE001 - report whatever pyarrow raises
        print(f"FAIL: Table.filter on `id`: {type(e).__name__}: {e}")
        failed += 1

    try:
        import datasets
    except Exception as e:  # noqa: BLE001
        print(f"skipped: datasets not importable ({type(e).__name__}: {e})")
        return failed
    try:
        d = datasets.load_dataset("parquet", data_files=path, split="train")
        print(f"ok: datasets {datasets.__version__} load_dataset: {d.num_rows} rows")
        print(f"    features: {d.features}")
        print(f"    row 0 id: {d[0]['id']!r}")
    except Exception as e:  # noqa: BLE001
        print(f"FAIL: datasets {datasets.__version__} load_dataset: {type(e).__name__}: {e}")
        failed += 1
    return failed


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    print(f"pyarrow {pa.__version__}")
    failed = sum(check(p) for p in sys.argv[1:])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
