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

python3 - "$OUT" <<'PY'
import json, math, sys
out = sys.argv[1]

def wilson(k, n, z=1.96):
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (c - h, c + h)

def pooled(report):
    """Per model: passes and decided checks over all turns."""
    r = json.load(open(report))
    res = {}
    for c in r["adherence"]:
        k, n = res.get(c["model"], (0, 0))
        res[c["model"]] = (k + c["n_pass"], n + c["n_pass"] + c["n_fail"])
    return r["models"], res

def cell(k, n):
    lo, hi = wilson(k, n)
    return f"{100 * k / max(n, 1):.1f}% [{100 * lo:.0f}-{100 * hi:.0f}] ({k}/{n})"

lines = ["# Collateral damage: base vs tuned", ""]
for title, report in [
    ("Instruction-free replies in the user's language (`control/`)", "control/report.json"),
    ("Adherence to unseen format rules (`unseen-format/`)", "unseen-format/report.json"),
]:
    models, res = pooled(f"{out}/{report}")
    lines += [f"## {title}", "", "| model | all turns, pooled [95% Wilson] |", "|---|---|"]
    lines += [f"| {m} | {cell(*res[m])} |" for m in models]
    lines.append("")
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
