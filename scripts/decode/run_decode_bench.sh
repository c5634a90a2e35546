#!/usr/bin/env bash
# Decode and prefill speed of the embedded model against llama.cpp on the same GGUF, the
# same synthetic prompts and the same thread count, back to back in one run (REPS rounds,
# alternating, so both see the same machine load). Each gatt round runs its cases five
# times, interleaved, and ends with the median and best of each and the batch-16 ratio.
#
#   scripts/decode/run_decode_bench.sh [REPS]
#
# Environment: PY, a Python with llama-cpp-python (default /work/llamacpp-venv/bin/python;
# `pip install llama-cpp-python==0.3.36` builds llama.cpp from source for this CPU);
# THREADS (default 2). Output: the example's lines and llama.cpp's JSON lines.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
REPS="${1:-2}"
PY="${PY:-/work/llamacpp-venv/bin/python}"
THREADS="${THREADS:-2}"
export RAYON_NUM_THREADS="$THREADS"
cargo build -q -p gatt-runtime --example decode_speed
GGUF="$(cargo run -q -- model fetch)"
for r in $(seq "$REPS"); do
  echo "== round $r: gatt (dense f32 + Q4_1/Q8_0 blocks for few rows)"
  target/debug/examples/decode_speed rounds=5
  echo "== round $r: llama.cpp"
  "$PY" scripts/decode/llamacpp_speed.py "$GGUF" "$THREADS" 64
done
