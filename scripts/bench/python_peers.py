#!/usr/bin/env python3
"""Python reference throughputs for `gatt mask`, on the same dialogues and tokenizer.

Measures, with the SmolLM2 tokenizer (tokenizer.json equal to the GGUF's) and its chat
template, in tokens of whole conversations per second:

  (a) template_tokenize   transformers `apply_chat_template(messages, tokenize=True)`
                          per dialogue.
  (b) last_turn_mask      the usual Python way to build a last-turn loss mask:
                            prompt = apply_chat_template(messages[:-1],
                                         add_generation_prompt=True, tokenize=True)
                            full   = apply_chat_template(messages, tokenize=True)
                            labels = [-100] * len(prompt) + full[len(prompt):]
  (c) encode_batch        the `tokenizers` library's `Tokenizer.encode_batch` of the
                          pre-rendered conversation texts (add_special_tokens=False), in a
                          child process per thread count with RAYON_NUM_THREADS=N and
                          TOKENIZERS_PARALLELISM=true.

(a) and (b) run in this process, on one thread (a single conversation is encoded without
the thread pool). Prints one JSON object.

Usage:
    python scripts/bench/python_peers.py DIALOGUES.jsonl \
        [--tokenizer tests/fixtures/golden/smollm2_tokenizer.json] \
        [--template tests/fixtures/golden/smollm2_chat_template.jinja] \
        [--threads 1,2] [--reps 1] [--batch-reps 3] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GOLDEN = REPO_ROOT / "tests" / "fixtures" / "golden"


def ids_of(result):
    # transformers 5 returns a BatchEncoding by default; 4.x returned the list.
    return result["input_ids"] if hasattr(result, "keys") else result


def load_tokenizer(tokenizer_file: Path, template_file: Path):
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_file), bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    tok.chat_template = template_file.read_text()
    return tok


def bench_template_tokenize(tok, dialogues) -> tuple[float, int]:
    t0 = time.perf_counter()
    tokens = 0
    for d in dialogues:
        ids = ids_of(tok.apply_chat_template(d, tokenize=True))
        tokens += len(ids)
    return time.perf_counter() - t0, tokens


def bench_last_turn_mask(tok, dialogues) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    tokens = loss = 0
    for d in dialogues:
        prompt = ids_of(tok.apply_chat_template(d[:-1], add_generation_prompt=True, tokenize=True))
        full = ids_of(tok.apply_chat_template(d, tokenize=True))
        labels = [-100] * len(prompt) + full[len(prompt):]
        tokens += len(full)
        loss += len(labels) - len(prompt)
    return time.perf_counter() - t0, tokens, loss


def batch_worker(tokenizer_file: str, texts_file: str, reps: int) -> None:
    """Child process: RAYON_NUM_THREADS is read when the tokenizers thread pool starts."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_file)
    texts = json.loads(Path(texts_file).read_text())
    tok.encode_batch(texts[:500], add_special_tokens=False)  # warm-up
    runs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        encs = tok.encode_batch(texts, add_special_tokens=False)
        secs = time.perf_counter() - t0
        tokens = sum(len(e.ids) for e in encs)
        del encs
        runs.append({"seconds": secs, "tokens": tokens, "tokens_per_s": tokens / secs})
    print(json.dumps(runs))


def median_run(runs: list[dict]) -> dict:
    tps = statistics.median(r["tokens_per_s"] for r in runs)
    return {"tokens_per_s": tps, "tokens": runs[0]["tokens"], "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", type=Path)
    ap.add_argument("--tokenizer", type=Path, default=GOLDEN / "smollm2_tokenizer.json")
    ap.add_argument("--template", type=Path, default=GOLDEN / "smollm2_chat_template.jinja")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=1, help="repetitions of (a) and (b)")
    ap.add_argument("--batch-reps", type=int, default=3, help="repetitions of (c)")
    ap.add_argument("--limit", type=int, help="use only the first N dialogues")
    ap.add_argument("--skip", default="", help="comma list of a,b,c to leave out")
    ap.add_argument("--batch-worker", nargs=2, metavar=("TOKENIZER", "TEXTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.batch_worker:
        batch_worker(args.batch_worker[0], args.batch_worker[1], args.batch_reps)
        return 0

    dialogues = []
    with args.input.open() as f:
        for line in f:
            if line.strip():
                dialogues.append(json.loads(line)["messages"])
            if args.limit and len(dialogues) >= args.limit:
                break
    skip = set(filter(None, args.skip.split(",")))
    tok = load_tokenizer(args.tokenizer, args.template)
    import tokenizers
    import transformers

    out: dict = {
        "dialogues": len(dialogues),
        "python": sys.version.split()[0],
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }
    # Warm-up (template compilation, caches).
    for d in dialogues[:200]:
        tok.apply_chat_template(d, tokenize=True)

    if "a" not in skip:
        runs = []
        for _ in range(args.reps):
            secs, tokens = bench_template_tokenize(tok, dialogues)
            runs.append({"seconds": secs, "tokens": tokens, "tokens_per_s": tokens / secs})
        out["template_tokenize"] = median_run(runs)
        print(f"python_peers: (a) {out['template_tokenize']['tokens_per_s']:.0f} tokens/s", file=sys.stderr)

    if "b" not in skip:
        runs = []
        for _ in range(args.reps):
            secs, tokens, loss = bench_last_turn_mask(tok, dialogues)
            runs.append({"seconds": secs, "tokens": tokens, "loss_tokens": loss, "tokens_per_s": tokens / secs})
        out["last_turn_mask"] = median_run(runs)
        out["last_turn_mask"]["loss_tokens"] = runs[0]["loss_tokens"]
        print(f"python_peers: (b) {out['last_turn_mask']['tokens_per_s']:.0f} tokens/s", file=sys.stderr)

    if "c" not in skip:
        texts = [tok.apply_chat_template(d, tokenize=False) for d in dialogues]
        out["encode_batch"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            texts_file = Path(tmp) / "texts.json"
            texts_file.write_text(json.dumps(texts))
            for n in [int(t) for t in args.threads.split(",")]:
                env = dict(os.environ, RAYON_NUM_THREADS=str(n), TOKENIZERS_PARALLELISM="true")
                res = subprocess.run(
                    [sys.executable, __file__, "--batch-reps", str(args.batch_reps),
                     "--batch-worker", str(args.tokenizer), str(texts_file), str(args.input)],
                    env=env, check=True, capture_output=True, text=True,
                )
                out["encode_batch"][str(n)] = median_run(json.loads(res.stdout))
                print(f"python_peers: (c) {n} thread(s) "
                      f"{out['encode_batch'][str(n)]['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
