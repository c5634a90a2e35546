#!/usr/bin/env bash
# Training throughput, gatt vs Python transformers (+ peft), same model weights, same
# masked data, same token budget per batch and thread count, back to back in one run.
#
#   scripts/train/run_train_bench.sh masked.parquet [STEPS] [BATCH_TOKENS] [THREADS]
#
# ROUNDS=N (default 3) repeats the whole comparison N times, each round LoRA then full,
# gatt then transformers back to back: on a shared machine step times move 10-25% between
# identical runs, so the summary gives each round's ratio and their median. MODES="full"
# (default "lora full") runs only those methods.
#
# gatt: `gatt train` (release build if BIN is unset: target/release/gatt), the first step
# left out as warm-up; transformers: scripts/train/bench_torch.py with one warm-up step.
# Peak memory from /usr/bin/time -v. Results: one JSON line per run in $WORK/results.jsonl.
set -euo pipefail
DATA="$1"; STEPS="${2:-6}"; BT="${3:-2048}"; THREADS="${4:-2}"
PY="${PY:-/work/pyenv/bin/python}"
BIN="${BIN:-target/release/gatt}"
WORK="${WORK:-$(mktemp -d)}"
ROUNDS="${ROUNDS:-3}"
MODES="${MODES:-lora full}"
HERE="$(cd "$(dirname "$0")" && pwd)"
export RAYON_NUM_THREADS="$THREADS" HF_HUB_OFFLINE=1
"$BIN" model export default --out "$WORK/hf" >/dev/null
for round in $(seq "$ROUNDS"); do
for mode in $MODES; do
  rm -rf "$WORK/run-$mode"
  /usr/bin/time -v -o "$WORK/gatt-$mode.time" "$BIN" train --model "$WORK/hf" --data "$DATA" \
    --out "$WORK/run-$mode" --method "$mode" --max-steps $((STEPS + 1)) --batch-tokens "$BT" \
    --lora-dropout 0 --save-every 100000 >/dev/null
  rss=$(grep "Maximum resident" "$WORK/gatt-$mode.time" | awk '{print $NF}')
  python3 - "$WORK/run-$mode/loss.jsonl" "$mode" "$rss" "$round" >> "$WORK/results.jsonl" <<'PY'
import json, sys
logs = [json.loads(l) for l in open(sys.argv[1])][1:]
tok = sum(l["tokens"] for l in logs); sec = sum(l["seconds"] for l in logs)
print(json.dumps({"tool": "gatt", "mode": sys.argv[2], "round": int(sys.argv[4]), "steps": len(logs), "tokens_per_s": tok / sec,
                  "s_per_step": sec / len(logs), "peak_rss_mib": int(sys.argv[3]) / 1024}))
PY
  /usr/bin/time -v -o "$WORK/torch-$mode.time" "$PY" "$HERE/bench_torch.py" --model "$WORK/hf" \
    --data "$DATA" --mode "$mode" --steps "$STEPS" --batch-tokens "$BT" --threads "$THREADS" \
    > "$WORK/torch-$mode.json"
  python3 - "$WORK/torch-$mode.json" "$mode" "$round" >> "$WORK/results.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"tool": "transformers " + r.get("transformers", "?"), "mode": sys.argv[2],
                  "round": int(sys.argv[3]),
                  "tokens_per_s": r["tokens_per_s"], "s_per_step": r["s_per_step"], "peak_rss_mib": r["peak_rss_mib"]}))
PY
done
done
cat "$WORK/results.jsonl"
python3 - "$WORK/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for mode in ("lora", "full"):
    ratios = []
    for r in sorted({x["round"] for x in rows if x["mode"] == mode}):
        ours = [x for x in rows if x["mode"] == mode and x["round"] == r and x["tool"] == "gatt"]
        peer = [x for x in rows if x["mode"] == mode and x["round"] == r and x["tool"] != "gatt"]
        if ours and peer:
            ratios.append(ours[0]["tokens_per_s"] / peer[0]["tokens_per_s"])
    if ratios:
        print(f"{mode}: gatt / transformers tokens/s per round "
              + ", ".join(f"{x:.2f}" for x in ratios) + f"; median {statistics.median(ratios):.2f}")
PY
