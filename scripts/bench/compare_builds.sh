#!/usr/bin/env bash
# Decode and training speed of two gatt builds (e.g. before and after a refactor), on the
# same machine, interleaved round by round so both see the same load.
#
#   scripts/bench/compare_builds.sh OLD_GATT NEW_GATT OLD_DECODE NEW_DECODE MASKED HF_DIR [ROUNDS]
#
# OLD_GATT/NEW_GATT: the `gatt` binaries; OLD_DECODE/NEW_DECODE: the `decode_speed`
# example of each build (`cargo build -p gatt-runtime --example decode_speed`; before the
# runtime crate existed, `-p gatt`); MASKED: a masked Parquet file; HF_DIR: the default
# model as a Hugging Face folder (`gatt model export default --out HF_DIR`).
# Training: LoRA and full, 5 steps of 2,048 tokens, the first step left out as warm-up.
# Output: the decode example's summary lines and one JSON line per training run.
set -euo pipefail
OLD="$1"; NEW="$2"; OLD_DEC="$3"; NEW_DEC="$4"; DATA="$5"; HF="$6"; ROUNDS="${7:-2}"
export RAYON_NUM_THREADS="${THREADS:-2}"
WORK="$(mktemp -d)"
train() { # BIN NAME MODE
  rm -rf "$WORK/run"
  "$1" train --model "$HF" --data "$DATA" --out "$WORK/run" --method "$3" --max-steps 5 \
    --batch-tokens 2048 --lora-dropout 0 --save-every 100000 >/dev/null 2>&1
  python3 - "$WORK/run/loss.jsonl" "$2" "$3" <<'PY'
import json, sys
logs = [json.loads(l) for l in open(sys.argv[1])][1:]
tok = sum(l["tokens"] for l in logs); sec = sum(l["seconds"] for l in logs)
print(json.dumps({"build": sys.argv[2], "mode": sys.argv[3], "tokens_per_s": round(tok / sec, 1)}))
PY
}
for r in $(seq "$ROUNDS"); do
  for b in old new; do
    if [ "$b" = old ]; then dec="$OLD_DEC"; bin="$OLD"; else dec="$NEW_DEC"; bin="$NEW"; fi
    echo "== round $r: $b decode"
    "$dec" rounds=3 | tail -n 8
    echo "== round $r: $b train"
    train "$bin" "$b" lora
    train "$bin" "$b" full
  done
done
