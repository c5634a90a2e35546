#!/usr/bin/env bash
# Runs gatt's `--endpoint` commands against real OpenAI-compatible servers serving the
# default model, and records what each server accepts (docs/compat.md, "Servers").
#
#   scripts/compat/check_servers.sh [llama|transformers|all]     (default: all)
#
# Servers:
# - llama: llama.cpp's server from `llama-cpp-python[server]` 0.3.36
#   (`python -m llama_cpp.server`), serving the default GGUF as it is cached;
# - transformers: `transformers serve` (transformers 5.24 with its `serving` extras),
#   serving the default model as a Hugging Face folder written by `gatt model export`.
#
# For each server: starts it on a free loopback port, waits for `GET /v1/models`, runs
# scripts/compat/probe_server.py (which request fields it honours, ignores or refuses),
# then, through scripts/compat/inflight_proxy.py (which logs the requests in flight),
# `gatt generate`, `gatt synth --mask` (the masks from the default model's tokenizer) and
# `gatt eval`, all with `--endpoint`; checks that every command exits 0, that the
# dialogues and masks are written and read back (`gatt mask` re-masks the dialogues,
# `gatt inspect` reads a masked row), that the reports are JSON, and stops the server.
# Exit status: 0 when every check passed, 1 otherwise.
#
# Venvs: $COMPAT_VENVS/server (llama-cpp-python[server], built from source: about 15 to 60
# minutes on 2 CPU cores) and $COMPAT_VENVS/tserve (transformers[serving]; the registry's
# torch is the CUDA build, ~3.4 GB, run on the CPU), created when missing (default
# COMPAT_VENVS=~/.cache/gatt/venvs). Outputs and logs go to $OUT (default
# out/compat-servers). Sizes: $DIALOGUES (default 4) dialogues of $TURNS (default 2)
# turns, $IN_FLIGHT (default 4) requests in flight, replies of at most $MAX_TOKENS
# (default 128) tokens. $GATT: a gatt binary to use instead of building one. `transformers serve` decodes on the CPU at a few tokens a second
# on shared cores; its torch runs with OMP_NUM_THREADS=${TSERVE_THREADS:-1} (2 threads on
# 2 busy cores were 3.5x slower). Needs no GPU.
set -euo pipefail
WHICH="${1:-all}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
V="${COMPAT_VENVS:-$HOME/.cache/gatt/venvs}"
HERE="$ROOT/scripts/compat"
OUT="${OUT:-$ROOT/out/compat-servers}"
DIALOGUES="${DIALOGUES:-4}"
TURNS="${TURNS:-2}"
IN_FLIGHT="${IN_FLIGHT:-4}"
MAX_TOKENS="${MAX_TOKENS:-128}"
# A whole reply, without streaming, on a slow CPU server: gatt's default (120 s) would
# abandon and retry requests the server keeps working on.
TIMEOUT="${TIMEOUT:-900}"
GATT_HOME="${GATT_HOME:-$HOME/.cache/gatt}"
GGUF="$GATT_HOME/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"

cd "$ROOT"
if [ -n "${GATT:-}" ]; then
    G="$GATT"
else
    cargo build -q --bin gatt
    G="${CARGO_TARGET_DIR:-$ROOT/target}/debug/gatt"
fi
"$G" model fetch >/dev/null
mkdir -p "$OUT"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

SERVER_PID=""
PROXY_PID=""
stop() {
    for pid in $PROXY_PID $SERVER_PID; do
        kill "$pid" 2>/dev/null || true
        # A server busy generating may not stop on SIGTERM at once.
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
    done
    SERVER_PID=""
    PROXY_PID=""
}
trap stop EXIT

status=0
fail() {
    echo "FAIL: $*"
    status=1
}

# Runs a gatt command, recording its wall time and exit status in $OUT/$name.{time,rc}.
timed() {
    local name="$1"
    shift
    local t0 t1 rc=0
    t0=$(date +%s.%N)
    "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" || rc=$?
    t1=$(date +%s.%N)
    python3 -c "print(f'{$t1 - $t0:.1f}')" >"$OUT/$name.time"
    echo "$rc" >"$OUT/$name.rc"
    echo "  $name: exit $rc, $(cat "$OUT/$name.time") s"
    [ "$rc" = 0 ] || { fail "$name exited $rc: $(tail -3 "$OUT/$name.err")"; return 0; }
}

# wait_up URL SECONDS: until GET URL answers 200.
wait_up() {
    for _ in $(seq 1 "$2"); do
        curl -s -m 2 -o /dev/null -w '%{http_code}' "$1" 2>/dev/null | grep -q 200 && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        sleep 1
    done
    return 1
}

# run_gatt NAME API_MODEL: the gatt commands against the server behind a logging proxy.
run_gatt() {
    local name="$1" api_model="$2" port="$3"
    local pp
    pp=$(free_port)
    python3 "$HERE/inflight_proxy.py" "$pp" "http://127.0.0.1:$port" "$OUT/$name-inflight.jsonl" &
    PROXY_PID=$!
    wait_up "http://127.0.0.1:$pp/v1/models" 30 || fail "$name: the proxy did not start"
    local ep=(--endpoint "http://127.0.0.1:$pp" --api-model "$api_model" --timeout "$TIMEOUT")
    echo "== $name: gatt"
    timed "$name-generate" "$G" generate "${ep[@]}" --prompt "What is the capital of France?" \
        --temperature 0 --max-tokens 32
    rm -rf "$OUT/$name-synth" "$OUT/$name-eval" "$OUT/$name-remask.parquet"
    : >"$OUT/$name-inflight.jsonl"
    timed "$name-synth" "$G" synth --out "$OUT/$name-synth" --dialogues "$DIALOGUES" \
        --turns "$TURNS" --max-tokens "$MAX_TOKENS" --seed 1 --in-flight "$IN_FLIGHT" \
        --mask --mask-model default "${ep[@]}"
    cp "$OUT/$name-inflight.jsonl" "$OUT/$name-synth-inflight.jsonl"
    python3 "$HERE/inflight_proxy.py" summarize "$OUT/$name-synth-inflight.jsonl" \
        | tee "$OUT/$name-synth-inflight.summary.json"
    local s="$OUT/$name-synth"
    for f in dialogues.parquet masked.parquet report.json run.json; do
        [ -s "$s/$f" ] || fail "$name synth: no $f"
    done
    for f in report.json run.json; do
        python3 -m json.tool "$s/$f" >/dev/null 2>&1 || fail "$name synth: $f is not JSON"
    done
    timed "$name-remask" "$G" mask --input "$s/dialogues.parquet" \
        --out "$OUT/$name-remask.parquet" --model default
    timed "$name-inspect" "$G" inspect "$s/masked.parquet" --row 0 --model default
    python3 - "$s/report.json" <<'EOF' || fail "$name synth: no dialogue written"
import json, sys
r = json.load(open(sys.argv[1]))
print("  synth report:", json.dumps({k: r[k] for k in list(r)[:6]})[:400])
EOF
    : >"$OUT/$name-inflight.jsonl"
    timed "$name-eval" "$G" eval --out "$OUT/$name-eval" --dialogues "$DIALOGUES" \
        --turns "$TURNS" --max-tokens "$MAX_TOKENS" --seed 1 --in-flight "$IN_FLIGHT" "${ep[@]}"
    cp "$OUT/$name-inflight.jsonl" "$OUT/$name-eval-inflight.jsonl"
    python3 "$HERE/inflight_proxy.py" summarize "$OUT/$name-eval-inflight.jsonl" \
        | tee "$OUT/$name-eval-inflight.summary.json"
    python3 -m json.tool "$OUT/$name-eval/report.json" >/dev/null 2>&1 \
        || fail "$name eval: report.json missing or not JSON"
    kill "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=""
}

check_llama() {
    if [ ! -x "$V/server/bin/python" ]; then
        python3 -m venv "$V/server"
        CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
            "$V/server/bin/pip" install -q 'llama-cpp-python[server]==0.3.36'
    fi
    local port
    port=$(free_port)
    echo "== llama: llama_cpp.server on port $port"
    "$V/server/bin/python" -m llama_cpp.server --model "$GGUF" --model_alias smollm2 \
        --host 127.0.0.1 --port "$port" --n_ctx 2048 >"$OUT/llama-server.log" 2>&1 &
    SERVER_PID=$!
    wait_up "http://127.0.0.1:$port/v1/models" 300 || { fail "llama server did not start"; stop; return; }
    python3 "$HERE/probe_server.py" "http://127.0.0.1:$port" smollm2 --context 2048 \
        | tee "$OUT/llama-probe.jsonl"
    run_gatt llama smollm2 "$port"
    # A prompt longer than the server's context: bad input (exit 2), named by the server.
    local long rc=0
    long=$(python3 -c 'print("apple banana cherry " * 1200)')
    "$G" generate --endpoint "http://127.0.0.1:$port" --api-model smollm2 --prompt "$long" \
        --max-tokens 8 >"$OUT/llama-too-long.out" 2>"$OUT/llama-too-long.err" || rc=$?
    echo "  too-long prompt: exit $rc: $(head -c 300 "$OUT/llama-too-long.err")"
    [ "$rc" = 2 ] || fail "llama: a too-long prompt gave exit $rc, not 2"
    stop
}

check_transformers() {
    if [ ! -x "$V/tserve/bin/python" ]; then
        python3 -m venv "$V/tserve"
        "$V/tserve/bin/pip" install -q 'transformers[serving]==5.24.0'
    fi
    local model="$OUT/smollm2-hf" port
    [ -f "$model/config.json" ] || "$G" model export default --out "$model" >/dev/null
    # transformers serve samples only when the model's generation config says
    # `do_sample: true` (a request's temperature does not turn it on): without it every
    # seed and every candidate gets the same greedy reply.
    python3 -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c["do_sample"] = True; json.dump(c, open(p, "w"), indent=2)' \
        "$model/generation_config.json"
    port=$(free_port)
    echo "== transformers: transformers serve on port $port"
    OMP_NUM_THREADS="${TSERVE_THREADS:-1}" HF_HUB_OFFLINE=1 "$V/tserve/bin/python" \
        -m transformers.cli.transformers serve "$model" --host 127.0.0.1 --port "$port" \
        --device cpu --log-level info >"$OUT/transformers-server.log" 2>&1 &
    SERVER_PID=$!
    wait_up "http://127.0.0.1:$port/v1/models" 300 || { fail "transformers serve did not start"; stop; return; }
    # The too-long probe is left out: transformers serve generates from a prompt past
    # the model's context (12,319 tokens took 6 minutes here) instead of refusing it.
    python3 "$HERE/probe_server.py" "http://127.0.0.1:$port" "$model" --no-too-long \
        | tee "$OUT/transformers-probe.jsonl"
    run_gatt transformers "$model" "$port"
    stop
}

case "$WHICH" in
    llama) check_llama ;;
    transformers) check_transformers ;;
    all) check_transformers; check_llama ;;
    *) echo "usage: $0 [llama|transformers|all]" >&2; exit 2 ;;
esac
[ "$status" = 0 ] && echo "== all checks passed" || echo "== some checks failed"
exit $status
