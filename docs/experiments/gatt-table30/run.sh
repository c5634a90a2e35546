#!/usr/bin/env bash
# Table 30 on figures and hobbies: synthesize GAtt data with a stronger teacher, fine-tune
# the default model, evaluate base and tuned to 20 turns on held-out constraints.
#
#   G=target/debug/gatt WORK=out/table30 docs/experiments/gatt-table30/run.sh [STEP]
#
# STEP: teacher | synth | synth_hobby | synth_three | mask | train | long | long_control |
# eval | collateral | attention | long_eval | tables (default:
# all, in that order). Each step reads what the one before wrote under $WORK. Synthesis
# stops at its time limit (LIMIT seconds, 2700 in the published run) and keeps every
# finished chunk of 16 dialogues; the same command with `--resume` appended goes on.
set -euo pipefail
G=${G:-gatt}
WORK=${WORK:-out/table30}
LIMIT=${LIMIT:-2700}
E=docs/experiments/gatt-table30
I=docs/experiments/gatt-smollm2/inputs
U=docs/experiments/gatt-smollm2-500/inputs/train_users8.jsonl
# The five languages with their false friends (English keywords that are ordinary words
# of the language, not counted as naming a hobby or persona); used from the third run on.
L=$E/languages5.json
STEP=${1:-all}
mkdir -p "$WORK"
step() { [ "$STEP" = all ] || [ "$STEP" = "$1" ]; }
# One held-out evaluation to turn 20: held_out OUT DIALOGUES KINDS MODEL... (the catalogs
# of the instructed kinds only; probes every other turn, 48-token replies, seed 0, so
# every model answers the same dialogues).
held_out() {
  local out=$1 n=$2 kinds=$3 models=() catalogs=()
  shift 3
  for m in "$@"; do models+=(--model "$m"); done
  [[ $kinds != *language* ]] || catalogs+=(--catalog "language=$L")
  [[ $kinds != *figure* ]] || catalogs+=(--catalog "figure=$I/figures_heldout.json")
  [[ $kinds != *hobby* ]] || catalogs+=(--catalog "hobby=$I/hobbies_heldout.json")
  "$G" eval "${models[@]}" --turns 20 --dialogues "$n" --constraints "$kinds" "${catalogs[@]}" \
    --user-bank "$I/heldout_bank.json" --probe-every 2 --max-tokens 48 --seed 0 --batch "$n" \
    --out "$out"
}

if step teacher; then
  [ -f "$WORK/teacher.gguf" ] || $E/fetch_teacher.sh "$WORK/teacher.gguf"
fi

# One synthesis run: the training half of the user bank (480 users), probes asked at every
# later turn from the training probe bank, 160-token replies, three candidates per turn
# judged by the evaluator's checks, a dialogue kept only if every reply adheres.
if step synth; then
  timeout "$LIMIT" "$G" synth --out "$WORK/synth" --model "$WORK/teacher.gguf" --dialogues 480 \
    --turns 3 --constraints figure,hobby,language --catalog language=$I/languages5.json \
    --catalog figure=$I/figures_train.json --catalog hobby=$I/hobbies_train.json \
    --users "$U" --probe-rate 1 --plain-share 0.1 --candidates 3 --min-adherence 1 \
    --cut-replies drop-eot --max-tokens 160 --seed 20 --batch 16 --chunk 16 \
    --format jsonl || true
  cat "$WORK"/synth/chunks/chunk-*.jsonl >"$WORK/dialogues.jsonl"
  "$G" eval --input "$WORK/dialogues.jsonl" --out "$WORK/data_adherence"
fi

# A second run for hobbies (the first kept 13 dialogues with a hobby, one of them with a
# language): hobby, figure and language, up to all three in one instruction, as the
# evaluation combines them; the hobby check now reads keywords in the instructed language.
if step synth_hobby; then
  timeout "$LIMIT" "$G" synth --out "$WORK/synth_hobby" --model "$WORK/teacher.gguf" \
    --dialogues 480 --turns 3 --constraints hobby,figure,language --max-combined 3 \
    --catalog language=$I/languages5.json --catalog figure=$I/figures_train.json \
    --catalog hobby=$I/hobbies_train.json --users "$U" --probe-rate 1 --plain-share 0 \
    --candidates 3 --min-adherence 1 --cut-replies drop-eot --max-tokens 160 --seed 21 \
    --batch 16 --chunk 16 --format jsonl || true
  cat "$WORK"/synth_hobby/chunks/chunk-*.jsonl >"$WORK/dialogues_hobby_run.jsonl"
  # The keyword translations were reviewed while this run went on: keep only dialogues
  # whose every reply passes the current checks.
  "$G" eval --input "$WORK/dialogues_hobby_run.jsonl" --out "$WORK/recheck_hobby"
  $E/refilter.py "$WORK/dialogues_hobby_run.jsonl" "$WORK/recheck_hobby/scores.jsonl" \
    >"$WORK/dialogues_hobby.jsonl"
  "$G" eval --input "$WORK/dialogues_hobby.jsonl" --out "$WORK/data_adherence_hobby"
fi

# A third run: every instruction a figure, a hobby and a language (`--min-combined 3`), as
# every main evaluation dialogue has; the two probe turns ask about the figure and the
# hobby once each; the `breaks_character` gate refuses "As an AI language model" replies.
# The run is long (about 30 minutes per chunk of 16 on 2 cores); its finished chunks are
# kept in `data/three-run/` and unpacked here, so that it goes on where it stopped.
if step synth_three; then
  if [ ! -f "$WORK/synth_three/run.json" ] && [ -f $E/data/three-run/run.json ]; then
    mkdir -p "$WORK/synth_three/chunks"
    cp $E/data/three-run/run.json "$WORK/synth_three/"
    for f in $E/data/three-run/chunk-*.jsonl.xz; do
      [ -e "$f" ] || continue
      xz -dc "$f" >"$WORK/synth_three/chunks/$(basename "$f" .xz)"
      cp "${f%.jsonl.xz}.gate.json" "$WORK/synth_three/chunks/"
    done
  fi
  RESUME=$([ -f "$WORK/synth_three/run.json" ] && echo --resume || true)
  timeout "$LIMIT" "$G" synth --out "$WORK/synth_three" --model "$WORK/teacher.gguf" $RESUME \
    --dialogues 480 --turns 3 --constraints hobby,figure,language --min-combined 3 \
    --max-combined 3 --catalog language=$L \
    --catalog figure=$I/figures_train.json --catalog hobby=$I/hobbies_train.json \
    --users "$U" --probe-rate 1 --plain-share 0 --candidates 3 --min-adherence 1 \
    --cut-replies drop-eot --max-tokens 160 --seed 22 --batch 16 --chunk 16 \
    --format jsonl || true
  compgen -G "$WORK/synth_three/chunks/chunk-*.jsonl" >/dev/null || { echo "no chunk finished"; exit 1; }
  cat "$WORK"/synth_three/chunks/chunk-*.jsonl >"$WORK/dialogues_three.jsonl"
  "$G" eval --input "$WORK/dialogues_three.jsonl" --catalog language=$L \
    --out "$WORK/data_adherence_three"
fi

# The third run's dialogues count THREE_COPIES times in training (2 in the published run):
# they are the only ones that ask the hobby beside a figure and a language.
THREE_COPIES=${THREE_COPIES:-2}
if step mask; then
  THREE=$([ -f "$WORK/dialogues_three.jsonl" ] && echo "$WORK/dialogues_three.jsonl" || true)
  cat "$WORK/dialogues.jsonl" "$WORK/dialogues_hobby.jsonl" $THREE >"$WORK/dialogues_all.jsonl"
  # Every run's dialogues judged again by the current checks (the first two runs were
  # sampled before the false friends): only dialogues whose every reply passes are kept.
  "$G" eval --input "$WORK/dialogues_all.jsonl" --catalog language=$L --out "$WORK/recheck_all"
  $E/refilter.py "$WORK/dialogues_all.jsonl" "$WORK/recheck_all/scores.jsonl" \
    >"$WORK/dialogues_train.jsonl"
  if [ -n "$THREE" ]; then
    for _ in $(seq 2 "$THREE_COPIES"); do
      $E/refilter.py "$THREE" "$WORK/recheck_all/scores.jsonl" >>"$WORK/dialogues_train.jsonl"
    done
  fi
  "$G" mask --input "$WORK/dialogues_train.jsonl" --out "$WORK/train.parquet" --model default \
    --policy gatt-expand
fi

if step train; then
  "$G" train --data "$WORK/train.parquet" --out "$WORK/tune" --epochs 3 --lr 5e-4 \
    --batch-tokens 2048 --save-every 10
  "$G" train merge "$WORK/tune" --out "$WORK/tuned"
fi

# Long contexts (a fourth stage, not in the paper): every figure or hobby probe turn of
# the training mix becomes the last turn of a dialogue of 5-16 turns, filler turns from
# the same mix (not probes, same language) inserted before it (`long_context.py`); the
# third stage's merged model is fine-tuned one epoch more on them, loss on the probe
# reply only (`--policy gatt`).
if step long; then
  $E/long_context.py "$WORK/dialogues_train.jsonl" "$WORK/recheck_all/scores.jsonl" 7 \
    >"$WORK/long.jsonl"
  "$G" mask --input "$WORK/long.jsonl" --out "$WORK/long.parquet" --model default --policy gatt
  "$G" train --model "$WORK/tuned" --data "$WORK/long.parquet" --out "$WORK/tune_long" \
    --epochs 1 --lr 5e-4 --batch-tokens 2048 --save-every 10
  "$G" train merge "$WORK/tune_long" --out "$WORK/tuned_long"
fi

# The control: the same samples without fillers, one epoch, about as many steps.
if step long_control; then
  $E/long_context.py "$WORK/dialogues_train.jsonl" "$WORK/recheck_all/scores.jsonl" 7 \
    --no-fillers >"$WORK/short.jsonl"
  "$G" mask --input "$WORK/short.jsonl" --out "$WORK/short.parquet" --model default --policy gatt
  "$G" train --model "$WORK/tuned" --data "$WORK/short.parquet" --out "$WORK/tune_short" \
    --epochs 1 --lr 5e-4 --batch-tokens 700 --save-every 10
  "$G" train merge "$WORK/tune_short" --out "$WORK/tuned_short"
  held_out "$WORK/long/control_fh" 30 figure,hobby "$WORK/tuned_short"
fi

if step eval; then
  held_out "$WORK/eval" 30 language,figure,hobby default "$WORK/tuned"
  # The hobby alone (English replies).
  held_out "$WORK/eval_hobby20" 15 hobby default "$WORK/tuned"
  # Figure and hobby only (the paper's Table 30 attributes), English replies.
  held_out "$WORK/eval_fh" 30 figure,hobby default "$WORK/tuned"
fi

if step collateral; then
  GATT="$G" scripts/experiments/collateral.sh default "$WORK/tuned" "$WORK/collateral" 20 8
fi

if step attention; then
  "$G" attention --input "$WORK/eval/dialogues-SmolLM2-135M-Instruct.Q4_1.gguf.jsonl" \
    --id eval-00000 --bin 16 --adapter "$WORK/tune/adapter" --out "$WORK/attention"
fi

# The fourth stage's model alone on the same three evaluations (same seeds: the same
# dialogues, instructions and probes as the base and third-stage models above), its
# collateral damage against the base, and its attention on the same dialogue.
if step long_eval; then
  held_out "$WORK/long/eval" 30 language,figure,hobby "$WORK/tuned_long"
  held_out "$WORK/long/eval_fh" 30 figure,hobby "$WORK/tuned_long"
  held_out "$WORK/long/eval_hobby20" 15 hobby "$WORK/tuned_long"
  GATT="$G" scripts/experiments/collateral.sh default "$WORK/tuned_long" "$WORK/long/collateral" 20 8
  "$G" attention --input "$WORK/eval/dialogues-SmolLM2-135M-Instruct.Q4_1.gguf.jsonl" \
    --id eval-00000 --bin 16 --model default --model "$WORK/tuned_long" --out "$WORK/long/attention"
fi

if step tables; then
  LONG=$([ -d "$WORK/long" ] && echo "$WORK/long" || echo "$WORK")
  CONTROL=$([ -d "$WORK/long/control_fh" ] && echo "$WORK/long/control_fh" || true)
  { $E/table30.py "$WORK/eval" "$LONG/eval"; echo; echo "## Figure and hobby, English"; echo
    $E/table30.py "$WORK/eval_fh" "$LONG/eval_fh" $CONTROL; echo; echo "## The hobby alone, English"
    echo; $E/table30.py "$WORK/eval_hobby20" "$LONG/eval_hobby20"; } >"$WORK/table30.md"
  cat "$WORK/table30.md"
fi
