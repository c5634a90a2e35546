#!/usr/bin/env bash
# Loss-mask throughput of `gatt mask` against Python peers, on the same dialogues and
# tokenizer (SmolLM2-135M-Instruct), plus a streaming memory check.
#
# Usage: scripts/bench/run_mask_bench.sh
# Environment:
#   PY          Python with transformers, tokenizers, jinja2 (default /tmp/golden-venv/bin/python)
#   WORK        work folder (default /tmp/gatt-mask-bench); results stay there, big inputs
#               and outputs are deleted
#   N           dialogues for the throughput runs (default 20000)
#   THREADS     thread counts (default "1 2")
#   REPS        repetitions of the in-process Rust measurements (default 3)
#   PY_REPS     repetitions of the Python template/mask measurements (default 3)
#   E2E_REPS    repetitions of each end-to-end `gatt mask` run (default 3)
#   STREAM_N    records for the streaming check: a number, "auto" (default: 1,000,000 when
#               the 20k end-to-end run projects to at most STREAM_MAX_S seconds, else
#               200,000) or 0 to skip
#   STREAM_MAX_S  default 720
#   ONLY_STREAM=1 run only the streaming check (STREAM_N must then be a number)
#
# Builds with the dev profile (optimized tokenizers, minijinja, regex and gatt crate);
# a release build is faster still.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
PY="${PY:-/tmp/golden-venv/bin/python}"
WORK="${WORK:-/tmp/gatt-mask-bench}"
N="${N:-20000}"
THREADS="${THREADS:-1 2}"
REPS="${REPS:-3}"
PY_REPS="${PY_REPS:-3}"
E2E_REPS="${E2E_REPS:-3}"
STREAM_N="${STREAM_N:-auto}"
STREAM_MAX_S="${STREAM_MAX_S:-720}"
ONLY_STREAM="${ONLY_STREAM:-0}"
TOKENIZER=tests/fixtures/golden/smollm2_tokenizer.json
TEMPLATE=tests/fixtures/golden/smollm2_chat_template.jinja
mkdir -p "$WORK"
log() { echo "== $*" >&2; }

log "build (dev profile)"
cargo build --bin gatt
cargo build --example mask_bench -p gatt
GATT="$ROOT/target/debug/gatt"
BENCH="$ROOT/target/debug/examples/mask_bench"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
  echo "cores: $(nproc)"
  echo "rustc: $(rustc --version)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "uncommitted changes: $(git status --short -- . ':!scripts/bench' 2>/dev/null | awk '{print $2}' | tr '\n' ' ')"
  echo "loadavg_before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$WORK/machine.txt"
cat "$WORK/machine.txt" >&2

# Other processes on the machine skew the numbers: log the load and the busiest
# processes every 10 s while the benchmark runs.
(
  while sleep 10; do
    echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) |" \
      "$(ps -eo pcpu=,comm= --sort=-pcpu | head -4 | awk '$1 > 10 {printf "%s %s%%; ", $2, $1}')"
  done
) > "$WORK/load.log" 2>/dev/null &
LOAD_PID=$!
trap 'kill $LOAD_PID 2>/dev/null || true' EXIT

DIALOGUES="$WORK/dialogues.jsonl"
log "generate $N dialogues"
"$PY" scripts/bench/make_dialogues.py --n "$N" --out "$DIALOGUES" \
  --tokenizer "$TOKENIZER" --template "$TEMPLATE" --check-sample "$N" | tee "$WORK/dialogues.json"

if [ "$ONLY_STREAM" != 1 ]; then
log "Python peers"
THREADS_CSV="$(echo $THREADS | tr ' ' ',')"
"$PY" scripts/bench/python_peers.py "$DIALOGUES" --tokenizer "$TOKENIZER" --template "$TEMPLATE" \
  --threads "$THREADS_CSV" --reps "$PY_REPS" > "$WORK/python.json"

log "Rust in-process: bare encode_batch vs Masker::mask"
"$BENCH" "$DIALOGUES" --threads "$THREADS_CSV" --reps "$REPS" --phases | tee "$WORK/mask_bench.jsonl"

for r in $(seq 1 "$E2E_REPS"); do
  for t in $THREADS; do
    log "gatt mask end to end, --threads $t (run $r of $E2E_REPS)"
    /usr/bin/time -v -o "$WORK/gatt_mask_t${t}_r$r.time" \
      "$GATT" mask --input "$DIALOGUES" --out "$WORK/masked_t$t.parquet" --model default --threads "$t" \
      > "$WORK/gatt_mask_t${t}_r$r.json"
    grep -E "Elapsed|Maximum resident" "$WORK/gatt_mask_t${t}_r$r.time" >&2
    rm -f "$WORK/masked_t$t.parquet"
  done
done
fi

if [ "$STREAM_N" = auto ]; then
  MAXT="$(echo $THREADS | tr ' ' '\n' | sort -n | tail -1)"
  WALL="$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$WORK/gatt_mask_t${MAXT}_r1.time" \
    | awk -F: '{s=0; for(i=1;i<=NF;i++) s=s*60+$i; print s}')"
  STREAM_N="$(awk -v w="$WALL" -v n="$N" -v max="$STREAM_MAX_S" \
    'BEGIN { if (w * 1000000 / n <= max) print 1000000; else print 200000 }')"
  log "streaming check: $N records took ${WALL}s with $MAXT threads; using $STREAM_N records"
fi
if [ "$STREAM_N" != 0 ]; then
  BIG="$WORK/stream.jsonl"
  log "write $STREAM_N records (the $N dialogues repeated with new ids)"
  "$PY" - "$DIALOGUES" "$BIG" "$STREAM_N" <<'EOF'
import sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = [l for l in open(src, encoding="utf-8") if l.strip()]
with open(dst, "w", encoding="utf-8") as f:
    for i in range(n):
        line = lines[i % len(lines)]
        # Every line starts with {"id": "bench-NNNNNNN", ...
        head, rest = line.split('", ', 1)
        f.write(f'{{"id": "stream-{i:08d}", {rest}')
EOF
  ls -l "$BIG" >&2
  log "gatt mask on $STREAM_N records (all threads)"
  /usr/bin/time -v -o "$WORK/stream.time" \
    "$GATT" mask --input "$BIG" --out "$WORK/stream.parquet" --model default > "$WORK/stream.json"
  grep -E "Elapsed|Maximum resident" "$WORK/stream.time" >&2
  ls -l "$WORK/stream.parquet" >&2
  rm -f "$BIG" "$WORK/stream.parquet"
fi
rm -f "$DIALOGUES"
echo "loadavg_after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$WORK/machine.txt"

log "summary"
"$PY" scripts/bench/summarize.py "$WORK" | tee "$WORK/summary.md"
