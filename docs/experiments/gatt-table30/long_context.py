#!/usr/bin/env python3
"""Long-context GAtt samples from short kept dialogues: each probe turn of a training
dialogue (a figure or hobby probe whose reply passed its check) becomes the last turn of
a longer dialogue, its own earlier turns kept in order with filler turns inserted after
the first, so that the trained reply is turn 5-16 of its dialogue, as in the
evaluation, instead of 2-3.

Filler turns are (user, assistant) pairs taken from the training dialogues' turns that
are not probes (every reply of which passed its checks), in the dialogue's language
(English: no language constraint), leaving out replies that mention their own dialogue's
figure or hobby (any word of its name, by its first five letters) or that step out of
character ("as an artificial intelligence"). Filler replies longer
than CUT characters are cut at the last word boundary before it, as the evaluation cuts
its replies at 48 tokens. The instruction
stays where it was, in the system message; `gatt mask --policy gatt` then gives loss to
the probe reply only, so the fillers are context, never targets. Not in the paper: an
augmentation of this experiment, named as such where it is used.

    long_context.py DIALOGUES.jsonl SCORES.jsonl SEED [--no-fillers] > long.jsonl

`--no-fillers` writes the same samples without filler turns (each dialogue cut after
its probe turn): the control that tells the effect of the depth from that of one more
epoch on the same probe answers.

DIALOGUES: the training mix (`dialogues_train.jsonl`; repeated records are read once);
SCORES: its re-check (`recheck_all/scores.jsonl`), which tells the probe turns.
"""
import json
import random
import sys

CUT = 200
MIN_FILLERS, MAX_FILLERS = 3, 13


def turns(record):
    """(user, assistant) pairs of a record, system message left out."""
    msgs = [m for m in record["messages"] if m["role"] != "system"]
    return [(msgs[i], msgs[i + 1]) for i in range(0, len(msgs), 2)]


def language(record):
    return next((c["value"] for c in record["constraints"] if c["kind"] == "language"), "English")


def main():
    dialogues_path, scores_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    no_fillers = sys.argv[4:] == ["--no-fillers"]
    rng = random.Random(seed)
    records, seen = [], set()
    for line in open(dialogues_path):
        r = json.loads(line)
        if r["id"] not in seen:
            seen.add(r["id"])
            records.append(r)
    passed = set()
    for line in open(scores_path):
        s = json.loads(line)
        if s["kind"] in ("figure", "hobby") and s["verdict"] == "pass":
            passed.add((s["dialogue"], s["turn"]))
    fillers = {}
    for r in records:
        stems = [w[:5].lower() for c in r["constraints"] if c["kind"] in ("figure", "hobby")
                 for w in c["value"].split() if len(w) >= 4]
        for t, (u, a) in enumerate(turns(r), start=1):
            text = a["content"]
            low = text.lower()
            if (r["id"], t) in passed or any(x in low for x in stems) or "artificial" in low:
                continue  # a probe, its own constraint, or "as an AI" out of character
            if len(text) > CUT:
                text = text[:CUT].rsplit(None, 1)[0]
            fillers.setdefault(language(r), []).append((u, {"role": "assistant", "content": text}))
    print({k: len(v) for k, v in sorted(fillers.items())}, file=sys.stderr)
    out = 0
    for r in records:
        pool = fillers.get(language(r))
        if not pool:
            continue
        pairs = turns(r)
        system = [m for m in r["messages"] if m["role"] == "system"]
        for t in range(2, len(pairs) + 1):
            if (r["id"], t) not in passed:
                continue
            n = 0 if no_fillers else rng.randint(MIN_FILLERS, MAX_FILLERS)
            # Fillers go after the first turn and between the dialogue's own turns
            # before the probe, never after it.
            slots = sorted(rng.randint(1, t - 1) for _ in range(n))
            chosen = rng.sample(pool, min(n, len(pool)))
            body = []
            for i, (u, a) in enumerate(pairs[:t]):
                body.append((u, a))
                while slots and slots[0] == i + 1 and chosen:
                    slots.pop(0)
                    body.append(chosen.pop())
            messages = system + [m for pair in body for m in pair]
            # Fewer fillers than drawn where the language's pool is smaller.
            meta = {"source": r["id"], "probe_turn": t, "fillers": len(body) - t,
                    "turns": len(body)}
            print(json.dumps({
                "id": f"{r['id']}-long{t}",
                "messages": messages,
                "instruction": r.get("instruction"),
                "constraints": r["constraints"],
                "meta": meta,
            }, ensure_ascii=False))
            out += 1
    print(f"{out} samples", file=sys.stderr)


if __name__ == "__main__":
    main()
