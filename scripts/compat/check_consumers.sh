#!/usr/bin/env bash
# Trains two steps with LLaMA-Factory and axolotl on gatt's exports, as the README's
# consumer table configures them, and checks that each trains gatt's mask (loss on the
# final reply only) with a step-1 loss equal to the cross-entropy over gatt's labels
# (scripts/compat/check_consumers.py says what is checked).
#
#   scripts/compat/check_consumers.sh [llamafactory|axolotl|unsloth|all]   (default: all =
#                                                                  llamafactory and axolotl)
#
# Venvs under $COMPAT_VENVS (default ~/.cache/gatt/venvs), created when missing:
#   llamafactory   LLaMA-Factory 0.9.5 and its pins (transformers 5.6, datasets 4.0, trl 0.24)
#   axolotl        axolotl 0.19.0 and its pins (transformers 5.16.1, datasets 4.8.4, trl 1.9)
# Each installs only the pure-Python packages of requirements-<consumer>.txt (--no-deps:
# the pins that were run, without the GPU-only extras such as bitsandbytes, xformers,
# flash attention, torchvision) and takes torch (and what the pins leave out) from the
# `compat` venv of check_exports.sh through a .pth file: one CUDA build of torch on disk,
# run on the CPU. Needs no GPU.
#   unsloth        Unsloth 2026.10.9 and unsloth_zoo (--no-deps) over the axolotl venv
#                  (transformers 5.16.1 and TRL 1.9 are within Unsloth's pins); Unsloth
#                  falls back to CPU training when no GPU is found (one step took 11 minutes
#                  on 2 shared cores)
set -euo pipefail
MODE="${1:-all}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
V="${COMPAT_VENVS:-$HOME/.cache/gatt/venvs}"
HERE="$ROOT/scripts/compat"
if [ ! -x "$V/compat/bin/python" ]; then
    python3 -m venv "$V/compat"
    "$V/compat/bin/pip" install -q datasets pyarrow torch transformers trl
fi
COMPAT_SITE="$("$V/compat/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
consumers=(llamafactory axolotl)
[ "$MODE" = all ] || consumers=("$MODE")
for c in "${consumers[@]}"; do
    venv="$V/$c"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
        site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
        base="$COMPAT_SITE"
        if [ "$c" = unsloth ]; then
            [ -x "$V/axolotl/bin/python" ] || { echo "unsloth needs the axolotl venv: run with axolotl first" >&2; exit 2; }
            base="$("$V/axolotl/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
        fi
        echo "import site; site.addsitedir('$base')" > "$site/zz_compat.pth"
        "$venv/bin/pip" install -q --no-deps -r "$HERE/requirements-$c.txt"
    fi
done
cd "$ROOT"
export HF_DATASETS_DISABLE_PROGRESS_BARS=1 HF_HUB_OFFLINE=1 PYTHONWARNINGS=ignore
export AXOLOTL_DO_NOT_TRACK=1
cargo build -q --bin gatt
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
D="$(mktemp -d)"
trap 'rm -rf "$D"' EXIT
IN=tests/fixtures/golden/dialogues.jsonl
for policy in gatt gatt-expand; do
    mkdir -p "$D/$policy"
    for out in masked.parquet tokenized.parquet tokenized.jsonl openai.jsonl; do
        stem="${out%%.*}"
        export="${stem/masked/gatt}"
        "$BIN/gatt" mask --input "$IN" --out "$D/$policy/$out" --model default \
            --policy "$policy" --on-error skip --export "$export" >/dev/null
    done
done
"$BIN/gatt" model export default --out "$D/model" >/dev/null
status=0
for c in "${consumers[@]}"; do
    echo "== $c"
    # The consumers' own logs (progress, tokenized examples) go to stderr and stdout;
    # only the checks' lines are kept.
    rc=0
    (cd "$D" && "$V/$c/bin/python" "$HERE/check_consumers.py" "$c" "$D" "$D/model") \
        > "$D/$c.log" 2>&1 || rc=$?
    grep -E '^(ok|FAIL|note|[0-9]+ failed|llamafactory |axolotl |unsloth |the model|dataset_info|datasets:|tokenized_path)' "$D/$c.log" \
        | sed "s#$D#\$D#g"
    if [ "$rc" != 0 ]; then status=1; tail -30 "$D/$c.log"; echo "exit $rc"; fi
done
exit $status
