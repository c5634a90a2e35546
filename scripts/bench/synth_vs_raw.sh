#!/usr/bin/env bash
# `gatt synth`'s sampled tokens per second against the embedded model's raw batched
# decode at the same batch size, alternated in one run (issue: synthesis at least 0.8 of
# the raw decode).
#
#   scripts/bench/synth_vs_raw.sh GATT DECODE_SPEED [ROUNDS] [DIALOGUES] [TURNS] [BATCH]
#
# GATT: the `gatt` binary; DECODE_SPEED: the `decode_speed` example of the same build
# (`cargo build -p gatt-runtime --example decode_speed`). Each round runs
# `gatt synth --dialogues D --turns T --batch B` (default model, default settings), then
# the raw decode of B sequences (five passes, decoding steps only). Each round is compared
# with the mean of the raw decodes just before and just after it (the machine's speed
# moves by a fifth within minutes, and a synthesis round lasts one to four); the first
# round's "before" runs right after it, its prompt length coming from the round's output.
# - Synthesis rate: `run.json`'s `counts.tokens_sampled` (every candidate the model
#   sampled, rejected ones included) over its `seconds` (from the start of synthesis to the
#   dataset written; loading the model is not in it).
# - Raw decode: as many steps as a mean reply, from prompts such that a step attends over
#   as many positions on average as the kept replies' steps did (their `meta.prompt_tokens`,
#   `meta.completion_tokens` and `meta.finished`; rejected candidates are not recorded,
#   and those cut at the token limit decode at longer contexts, so this baseline likely
#   decodes shorter sequences than synthesis did and favours the raw side).
# Output: one line per round and the ratio of the rounds pooled.
set -euo pipefail
GATT="$1"; DEC="$2"; ROUNDS="${3:-2}"; D="${4:-32}"; T="${5:-3}"; B="${6:-8}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
total_tok=0; total_s=0; all_raw=""; prev_raw=""
raw_decode() { # prompt steps -> median tokens/s of five passes
  local out
  out=$("$DEC" only="$B" prompt="$1" steps="$2" rounds=5 | sed -n "s/^batch *$B prompt *$1: decode median \([0-9.]*\).*/\1/p")
  [[ -n "$out" ]] || { echo "no decode median in decode_speed's output" >&2; exit 1; }
  echo "$out"
}
for r in $(seq "$ROUNDS"); do
  rm -rf "$WORK/synth"
  "$GATT" synth --out "$WORK/synth" --dialogues "$D" --turns "$T" --batch "$B" >/dev/null
  read -r tok secs prompt steps < <(python3 - "$WORK/synth" <<'PY'
import glob, json, sys
d = sys.argv[1]
run = json.load(open(f"{d}/run.json"))
steps = attended = replies = tokens = 0
for path in glob.glob(f"{d}/chunks/*.jsonl"):
    for line in open(path):
        m = json.loads(line)["meta"]
        finished = m.get("finished") or [True] * len(m["prompt_tokens"])
        for p, c, f in zip(m["prompt_tokens"], m["completion_tokens"], finished):
            if p is None or c is None:
                continue
            replies += 1; tokens += c
            # A reply that stopped took c steps (the last drew its end-of-turn token);
            # one cut at the limit c - 1. Step k attends over p + k positions.
            s = c if f else max(c - 1, 0)
            steps += s; attended += s * p + s * (s + 1) // 2
mean_reply = max(tokens // max(replies, 1), 16)
prompt = max(round(attended / max(steps, 1) - (mean_reply + 1) / 2), 1)
print(run["counts"]["tokens_sampled"], run["seconds"], prompt, mean_reply)
PY
)
  # The synthesis is deterministic: every round gives the same prompt and step count.
  if [[ -z "$prev_raw" ]]; then prev_raw=$(raw_decode "$prompt" "$steps"); all_raw="$prev_raw"; fi
  raw=$(raw_decode "$prompt" "$steps")
  all_raw="$all_raw $raw"
  read -r synth_rate around ratio < <(python3 -c "
r = $tok / $secs; a = ($prev_raw + $raw) / 2
print(f'{r:.1f} {a:.1f} {r / a:.2f}')")
  echo "round $r: synth $tok tokens in ${secs%.*} s = $synth_rate tokens/s; raw batch-$B decode from $prompt-token prompts, $steps steps: $prev_raw before, $raw after (mean $around) tokens/s; ratio $ratio"
  total_tok=$(python3 -c "print($total_tok + $tok)"); total_s=$(python3 -c "print($total_s + $secs)")
  prev_raw="$raw"
done
python3 - "$total_tok" "$total_s" $all_raw <<'PY'
import statistics, sys
tok, secs, raws = float(sys.argv[1]), float(sys.argv[2]), [float(x) for x in sys.argv[3:]]
print(f"all rounds: synth {tok / secs:.1f} tokens/s, raw decode {statistics.mean(raws):.1f} (mean of {len(raws)} medians, before, between and after the rounds): ratio {tok / secs / statistics.mean(raws):.2f}")
PY
