#!/usr/bin/env bash
# Synthesize the 500-dialogue GAtt training set: 100 dialogues each of 4, 5, 6, 7 and 8
# user turns (seeds 4..8), language + figure + hobby constraints, training halves of the
# catalogs and user bank (inputs/train_users8.jsonl: job N takes scripts 100(N-4)+1 to
# 100(N-4)+100), best of 2 candidates. Every job is split into SHARDS processes
# that run at once; chunks of 10 dialogues are saved as they finish, so a run stopped by
# the time limit keeps what it made (and `--resume` would go on from there).
#
#   G=target/debug/gatt DEVICE=cpu SHARDS=1 LIMIT=36000 WORK=out/500 \
#     docs/experiments/gatt-smollm2-500/synth.sh
#
# Writes $WORK/turns-N/shard-I/ (one synth run each) and $WORK/dialogues.jsonl (all
# finished chunks, ordered by turns, shard and chunk).
set -uo pipefail
G=${G:-gatt}
DEVICE=${DEVICE:-cpu}
SHARDS=${SHARDS:-1}
LIMIT=${LIMIT:-36000}
WORK=${WORK:-out/500}
BATCH=${BATCH:-50}
I=docs/experiments/gatt-smollm2/inputs
U=docs/experiments/gatt-smollm2-500/inputs/train_users8.jsonl
mkdir -p "$WORK"
pids=()
for turns in 4 5 6 7 8; do
  sed -n "$((100 * (turns - 4) + 1)),$((100 * (turns - 4) + 100))p" $U >"$WORK/users-$turns.jsonl"
  for shard in $(seq 1 "$SHARDS"); do
    dir=$WORK/turns-$turns/shard-$shard
    mkdir -p "$dir"
    timeout "$LIMIT" "$G" synth --out "$dir" --dialogues 100 --turns "$turns" \
      --constraints language,figure,hobby --catalog language=$I/languages5.json \
      --catalog figure=$I/figures_train.json --catalog hobby=$I/hobbies_train.json \
      --users "$WORK/users-$turns.jsonl" --candidates 2 --max-tokens 40 --seed "$turns" \
      --shard "$shard/$SHARDS" --chunk 10 --batch "$BATCH" --device "$DEVICE" \
      --format jsonl >"$dir/log.txt" 2>&1 &
    pids+=($!)
  done
done
for p in "${pids[@]}"; do wait "$p"; done
find "$WORK" -path '*/chunks/chunk-*.jsonl' | sort | xargs cat >"$WORK/dialogues.jsonl"
echo "dialogues: $(wc -l <"$WORK/dialogues.jsonl")"
