#!/usr/bin/env bash
# Collateral damage of a fine-tune: three measurements of BASE against TUNED, all on data
# the fine-tune never saw, written to OUT/summary.md (and the full reports beside it).
#
#   1. Instruction-free answers in the user's language (`gatt eval --no-instruction`):
#      a GAtt fine-tune on "Always answer in French" data may drift into French unasked.
#   2. Perplexity of reference answers to general questions (`gatt score` on
#      templates/reference/general_qa.jsonl, masked with BASE's tokenizer and template).
#   3. Adherence to format rules the fine-tune did not train on (`gatt eval --constraints
#      format`; the Llama 2 paper saw GAtt help with unseen constraints too).
#
# usage: scripts/experiments/collateral.sh BASE TUNED OUT [DIALOGUES] [TURNS]
#   BASE, TUNED  `gatt --model` values: default, a .gguf, a Hugging Face folder (e.g. the
#                output of `gatt train merge`); both must share a tokenizer and template.
#   DIALOGUES    per model and measurement (default 30); TURNS per dialogue (default 12).
# Environment: GATT (default: `cargo run -q --release --`), SEED (default 0).
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n 2,16p "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
BASE=$1 TUNED=$2 OUT=$3 DIALOGUES=${4:-30} TURNS=${5:-12}
GATT=${GATT:-cargo run -q --release --}
SEED=${SEED:-0}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$OUT"

echo "== 1. instruction-free answers in the user's language" >&2
$GATT eval --no-instruction --model "$BASE" --model "$TUNED" --out "$OUT/control" \
    --dialogues "$DIALOGUES" --turns "$TURNS" --seed "$SEED" --temperature 0 >/dev/null

echo "== 2. perplexity of reference answers" >&2
$GATT mask --model "$BASE" --input "$ROOT/templates/reference/general_qa.jsonl" \
    --out "$OUT/general_qa.parquet" >/dev/null
$GATT score --data "$OUT/general_qa.parquet" --model "$BASE" --out "$OUT/qa-base.json" >/dev/null
$GATT score --data "$OUT/general_qa.parquet" --model "$TUNED" --out "$OUT/qa-tuned.json" >/dev/null

echo "== 3. unseen format rules" >&2
$GATT eval --constraints format --model "$BASE" --model "$TUNED" --out "$OUT/unseen-format" \
    --dialogues "$DIALOGUES" --turns "$TURNS" --seed "$SEED" --temperature 0 >/dev/null

python3 - "$OUT" "$ROOT/scripts/experiments" <<'PY'
import json, sys
out = sys.argv[1]
sys.path.insert(0, sys.argv[2])
from pooled import table  # intervals over dialogues: turns of one dialogue are not independent

def rows(path):
    return [json.loads(l) for l in open(path) if l.strip()]

lines = ["# Collateral damage: base vs tuned", ""]
for title, scores in [
    ("Instruction-free replies in the user's language (`control/`)", "control/scores.jsonl"),
    ("Adherence to unseen format rules (`unseen-format/`)", "unseen-format/scores.jsonl"),
]:
    lines += [f"## {title}", "", table(rows(f"{out}/{scores}")), ""]
base = json.load(open(f"{out}/qa-base.json"))["scores"]
tuned = json.load(open(f"{out}/qa-tuned.json"))["scores"]
ratio = tuned["perplexity"] / base["perplexity"]
lines += [
    "## Reference answers (`templates/reference/general_qa.jsonl`)", "",
    "| model | loss tokens | NLL per token (nats) | perplexity |", "|---|---|---|---|",
    f"| base | {base['loss_tokens']} | {base['nll_per_token']:.4f} | {base['perplexity']:.3f} |",
    f"| tuned | {tuned['loss_tokens']} | {tuned['nll_per_token']:.4f} | {tuned['perplexity']:.3f} |",
    "", f"Perplexity ratio tuned / base: {ratio:.3f} (the aim: at most 1.10).", "",
]
open(f"{out}/summary.md", "w").write("\n".join(lines))
print("\n".join(lines))
PY
