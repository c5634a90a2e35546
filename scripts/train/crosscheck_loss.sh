#!/usr/bin/env bash
# Loss of the same weights on the same masked samples: gatt (Rust, candle) vs Python
# transformers. Both read MODEL_DIR, a Hugging Face folder (e.g. from
# `gatt model export default --out DIR`, or scripts/train/export_hf.py).
#
#   scripts/train/crosscheck_loss.sh MODEL_DIR masked.parquet [ROWS]
#
# Prints both JSON results and the largest per-row difference.
set -euo pipefail
MODEL="$1"; DATA="$2"; ROWS="${3:-8}"
PY="${PY:-/work/pyenv/bin/python}"
ours=$(cargo run -q -p gatt-runtime --example loss_of -- "$MODEL" "$DATA" "$ROWS")
theirs=$(HF_HUB_OFFLINE=1 "$PY" "$(dirname "$0")/torch_loss.py" --model "$MODEL" --data "$DATA" --rows "$ROWS" --threads 1)
echo "gatt:         $ours"
echo "transformers: $theirs"
python3 - "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
rows_b = b["rows"]
rows_b = [r["loss"] if isinstance(r, dict) else r for r in rows_b]
d = max(abs(x - y) for x, y in zip(a["per_row"], rows_b))
print(f"token mean: gatt {a['token_mean']:.6f} transformers {b.get('token_mean', b.get('loss')):.6f}; "
      f"max per-row difference {d:.2e} over {len(rows_b)} rows")
PY
