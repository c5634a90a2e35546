#!/usr/bin/env python3
"""Reference attention of the default model for `gatt attention`'s tests.

transformers loads SmolLM2-135M-Instruct from its GGUF (dequantized to float32), runs
one chat-templated dialogue with `output_attentions=True` (eager attention: the softmax
probabilities themselves) and reduces them as gatt's `AttentionSummary` does:

  max[i][j]  = max over layers and heads of P[l][h][i][j]
  mean[i][j] = mean over layers and heads of P[l][h][i][j]
  mass_max[i]  = max over layers and heads of sum_{j in keys, j <= i} P[l][h][i][j]
  mass_mean[i] = mean over layers and heads of the same sum

Run from the repository root in a venv with torch, transformers and gguf:

    python scripts/golden/make_attention_fixture.py \
        --gguf ~/.cache/gatt/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf \
        --out tests/fixtures/golden/transformers_attention.json

The input ids are stored with the numbers, so the Rust test does not depend on how
transformers tokenizes (its GGUF tokenizer drops SmolLM2's digit split; the text here
has no digits anyway).
"""
import argparse
import json
import os

import torch

SYSTEM = "Always answer in French."
MESSAGES = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "How are you today?"},
    {"role": "assistant", "content": "Je vais bien, merci."},
    {"role": "user", "content": "What is your name?"},
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, AutoTokenizer
    import transformers

    folder, name = os.path.split(os.path.abspath(os.path.expanduser(args.gguf)))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    text = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    # The system message's content: its tokens, found by their character offsets.
    start = text.index(SYSTEM)
    end = start + len(SYSTEM)
    offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    keys = [i for i, (a, b) in enumerate(offsets) if a >= start and b <= end and b > a]
    assert keys == list(range(keys[0], keys[-1] + 1)), keys
    assert text[offsets[keys[0]][0]:offsets[keys[-1]][1]] == SYSTEM
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_attentions=True)
    att = torch.stack([a[0] for a in out.attentions])  # layers x heads x n x n
    n = len(ids)
    lo, hi = keys[0], keys[-1] + 1
    mass = att[..., lo:hi].sum(-1)  # layers x heads x n
    r = lambda t: [round(float(x), 7) for x in t.flatten()]
    doc = {
        "model": name,
        "dtype": "float32",
        "messages": MESSAGES,
        "text": text,
        "input_ids": ids,
        "keys": [lo, hi],
        "layers": att.shape[0],
        "heads": att.shape[1],
        "max": r(att.amax(dim=(0, 1))),
        "mean": r(att.mean(dim=(0, 1))),
        "mass_max": r(mass.amax(dim=(0, 1))),
        "mass_mean": r(mass.mean(dim=(0, 1))),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "made_by": "scripts/golden/make_attention_fixture.py (transformers, "
        "attn_implementation=eager, output_attentions=True)",
    }
    assert n == att.shape[-1]
    with open(args.out, "w") as f:
        json.dump(doc, f)
        f.write("\n")
    print(f"{n} tokens, keys {lo}..{hi}, {args.out}")


if __name__ == "__main__":
    main()
