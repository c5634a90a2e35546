#!/usr/bin/env bash
# Loads every file gatt writes with Hugging Face `datasets` (the newest, 4.0, 3.6 and
# 2.21), and
# trains two steps on the exports with the HF `Trainer` and TRL's `SFTTrainer` from the
# default model exported by `gatt model export`, checking tokens, labels and loss
# against gatt's masks (scripts/compat/check_exports.py says what is checked).
#
#   scripts/compat/check_exports.sh [load|all]     (default: all; `load` skips training)
#
# Venvs: $COMPAT_VENVS/compat (datasets, pyarrow, torch, transformers, trl) and
# $COMPAT_VENVS/compat-dsNN (datasets 4.0, 3.6, 2.21), created when missing (default
# COMPAT_VENVS=~/.cache/gatt/venvs). The registry's torch wheel is the CUDA build (~3.4 GB with
# its nvidia wheels); it runs on the CPU. Inputs are the golden fixture dialogues, masked
# with the default model's tokenizer and template (the default model is fetched on
# first use). Needs no GPU; the last run took 18.5 minutes on 2 shared CPU cores
# (docs/compat.md), most of it the three two-step trainings.
set -euo pipefail
MODE="${1:-all}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
V="${COMPAT_VENVS:-$HOME/.cache/gatt/venvs}"
OLDER="4.0 3.6 2.21"
HERE="$ROOT/scripts/compat"
if [ ! -x "$V/compat/bin/python" ]; then
    python3 -m venv "$V/compat"
    "$V/compat/bin/pip" install -q datasets pyarrow torch transformers trl
fi
for ver in $OLDER; do
    venv="$V/compat-ds${ver//./}"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "datasets==$ver.*" pyarrow
    fi
done
cd "$ROOT"
export HF_DATASETS_DISABLE_PROGRESS_BARS=1 HF_HUB_OFFLINE=1 PYTHONWARNINGS=ignore
cargo build -q --bin gatt
cargo build -q -p gatt --example dialogues_to_parquet
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
D="$(mktemp -d)"
trap 'rm -rf "$D"' EXIT
IN=tests/fixtures/golden/dialogues.jsonl
"$BIN/examples/dialogues_to_parquet" "$IN" "$D/dialogues.parquet"
for policy in gatt gatt-expand; do
    mkdir -p "$D/$policy"
    for out in masked.parquet tokenized.parquet tokenized.jsonl prompt_completion.parquet \
        prompt_completion.jsonl openai.jsonl; do
        stem="${out%%.*}"
        export="${stem/prompt_completion/prompt-completion}"
        export="${export/masked/gatt}"
        "$BIN/gatt" mask --input "$IN" --out "$D/$policy/$out" --model default \
            --policy "$policy" --on-error skip --export "$export" >/dev/null
    done
done
status=0
# Each datasets version gets its own cache: a newer version's cached dataset info (e.g.
# its `List` feature type) breaks an older one reading the same files.
echo "== datasets (newest)"
HF_DATASETS_CACHE="$D/cache-newest" "$V/compat/bin/python" "$HERE/check_exports.py" load "$D" || status=1
for ver in $OLDER; do
    echo "== datasets $ver"
    HF_DATASETS_CACHE="$D/cache-$ver" "$V/compat-ds${ver//./}/bin/python" \
        "$HERE/check_exports.py" load "$D" || status=1
done
if [ "$MODE" = all ]; then
    "$BIN/gatt" model export default --out "$D/model" >/dev/null
    echo "== trainers"
    "$V/compat/bin/python" "$HERE/check_exports.py" train "$D" "$D/model" || status=1
fi
exit $status
