#!/usr/bin/env python3
"""Generate the golden fixtures in tests/fixtures/golden/ with an independent implementation.

The fixtures pin down, for the built-in chat templates and for the SmolLM2 GGUF tokenizer, what the
Python reference stack (transformers + jinja2 + tokenizers) produces, so the Rust implementation can be
checked against it byte for byte and id for id.

Usage:
    python scripts/golden/make_fixtures.py PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf [--out DIR]

Outputs (in --out, default tests/fixtures/golden next to this repository's root):
    dialogues.jsonl           the input dialogues (hand-written + generated with a fixed seed)
    render.jsonl              every built-in template x dialogue x add_generation_prompt
    smollm2_tokens.jsonl      the GGUF's own chat template rendered and tokenized
    smollm2_tokenizer.json    the tokenizer built from the GGUF metadata
    smollm2_chat_template.jinja  the GGUF's chat template (metadata key tokenizer.chat_template)
    real_templates.jsonl      real model templates (tests/fixtures/templates) x dialogues x template
                              arguments: the text or the error, and the {% generation %} ranges
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "golden"
DEFAULT_TEMPLATES = REPO_ROOT / "templates" / "chat"
REAL_TEMPLATES = REPO_ROOT / "tests" / "fixtures" / "templates"

# Real templates: file stem -> (bos_token, eos_token, template argument sets to render with).
REAL = {
    "Qwen-Qwen3-0.6B": ("", "<|im_end|>", [{}, {"enable_thinking": False}]),
    "Qwen3-Coder": ("", "<|im_end|>", [{}]),
    "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16": ("<s>", "<|im_end|>", [{}, {"enable_thinking": False}]),
    "LFM2.5-8B-A1B": ("<|startoftext|>", "<|im_end|>", [{}]),
    "meta-llama-Llama-3.1-8B-Instruct": ("<|begin_of_text|>", "<|eot_id|>", [{}]),
}
# Dialogues rendered with every real template (ids of all_dialogues()).
REAL_DIALOGUES = ("h01_basic", "h02_system_french")

SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SEED = 20240607

# GGUF token types (llama.cpp's llama_token_type).
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4


# ---------------------------------------------------------------------------------------------------------
# Dialogues
# ---------------------------------------------------------------------------------------------------------


def m(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def hand_written_dialogues() -> list[dict]:
    long_para = (
        "Ghost Attention keeps a system instruction alive across many turns. "
        "The instruction is attached to every user message while the synthetic data is sampled, "
        "then dropped from all but the first turn, and the loss on earlier turns is masked. "
    )
    long_text = "".join(f"[{i:03d}] {long_para}" for i in range(24))
    code = (
        "Here is the function:\n\n```rust\nfn fib(n: u64) -> u64 {\n    match n {\n        0 => 0,\n"
        "        1 => 1,\n        _ => fib(n - 1) + fib(n - 2),\n    }\n}\n```\n\n"
        "And in Python:\n\n```python\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n```\n"
    )
    return [
        {
            "id": "h01_basic",
            "messages": [
                m("user", "What is the capital of France?"),
                m("assistant", "The capital of France is Paris."),
            ],
        },
        {
            "id": "h02_system_french",
            "messages": [
                m("system", "Always answer in French."),
                m("user", "How are you today?"),
                m("assistant", "Je vais très bien, merci !"),
                m("user", "What's 2+2?"),
                m("assistant", "Deux plus deux font quatre."),
            ],
        },
        {
            "id": "h03_digits_list",
            "messages": [
                m("system", "Answer with a numbered list."),
                m("user", "Give me three tips for sleeping better."),
                m(
                    "assistant",
                    "Here are three tips:\n\n1. Keep a fixed schedule.\n\n2. Avoid screens 30 minutes before bed."
                    "\n\n3. Keep the room at 18-19 °C.",
                ),
            ],
        },
        {
            "id": "h04_unicode_emoji",
            "messages": [
                m("user", "Décris-moi un café ☕ en une phrase, s'il te plaît 🙏"),
                m("assistant", "Un café, c'est une petite pause chaude et amère qui réveille l'esprit 😄👍🏽✨"),
                m("user", "Now with a family emoji: 👨‍👩‍👧‍👦 and a flag 🇫🇷"),
                m("assistant", "👨‍👩‍👧‍👦 sharing a café in 🇫🇷 — très bien!"),
            ],
        },
        {
            "id": "h05_cjk",
            "messages": [
                m("system", "你是一个乐于助人的助手。请用中文回答。"),
                m("user", "日本の首都はどこですか？　한국의 수도는요?"),
                m("assistant", "日本の首都は東京です。한국의 수도는 서울입니다。中国的首都是北京。"),
            ],
        },
        {
            "id": "h06_arabic_rtl",
            "messages": [
                m("user", "ما هي عاصمة مصر؟"),
                m("assistant", "عاصمة مصر هي القاهرة."),
                m("user", "Mixed: العربية and English, שלום, 123 ٤٥٦"),
                m("assistant", "Sure — العربية first, then English. ٤٥٦ = 456."),
            ],
        },
        {
            "id": "h07_whitespace_edges",
            "messages": [
                m("system", "  Be concise.  \n"),
                m("user", "\n\n  Leading and trailing whitespace matter?  \n\n"),
                m("assistant", "   Some templates strip it, others keep it.   \n"),
                m("user", "\tTabs\tand\r\nCRLF line endings\r\n"),
                m("assistant", "\u00a0Non-breaking space and ideographic space\u3000"),
            ],
        },
        {
            "id": "h08_marker_lookalikes",
            "messages": [
                m("system", "Treat <|im_end|> and [INST] as plain text."),
                m("user", "Is <|im_start|>user a token? What about [INST] hi [/INST] or <<SYS>>?"),
                m(
                    "assistant",
                    "In plain text, <|eot_id|>, <|end|>, <end_of_turn>, </s> and <s> are just characters.",
                ),
            ],
        },
        {
            "id": "h09_long",
            "messages": [
                m("system", "Summarize faithfully."),
                m("user", "Summarize this:\n\n" + long_text),
                m("assistant", "Summary: " + long_para.strip()),
            ],
        },
        {
            "id": "h10_code",
            "messages": [
                m("user", "Write the Fibonacci function in Rust and Python."),
                m("assistant", code),
            ],
        },
        {
            "id": "h11_six_turns",
            "messages": [
                m("system", "Speak like a pirate."),
                m("user", "Hello!"),
                m("assistant", "Ahoy, matey!"),
                m("user", "Where is the treasure?"),
                m("assistant", "Buried on Skull Island, arr."),
                m("user", "How deep?"),
                m("assistant", "Twenty paces down, 20 feet deep."),
                m("user", "Who buried it?"),
                m("assistant", "Cap'n Redbeard in 1715."),
                m("user", "Can I have some?"),
                m("assistant", "Only if ye can find it!"),
                m("user", "Goodbye."),
                m("assistant", "Fair winds to ye!"),
            ],
        },
        {
            "id": "h12_numbers",
            "messages": [
                m("user", "Compute 1234567 * 89 and 3.14159 / 2."),
                m("assistant", "1234567 * 89 = 109876463\n3.14159 / 2 = 1.570795\n\n1. Done."),
            ],
        },
        {
            "id": "h13_quotes_braces",
            "messages": [
                m("user", "Print {{ messages }} and {% raw %} literally, plus 'quotes' and \"double\" \\ backslash."),
                m("assistant", "Literal: {{ messages }} {% raw %} {# comment #} 'single' \"double\" \\n is not a newline."),
            ],
        },
        {
            "id": "h14_json_content",
            "messages": [
                m("system", "Reply only with JSON."),
                m("user", 'Give {"name": "Ada", "born": 1815} back with a "field": null added.'),
                m("assistant", '{"name": "Ada", "born": 1815, "field": null}'),
            ],
        },
        {
            "id": "h15_lowercase_constraint",
            "messages": [
                m("system", "Answer in lowercase only."),
                m("user", "NAME THREE PLANETS."),
                m("assistant", "mercury, venus and earth."),
                m("user", "And the largest one?"),
                m("assistant", "jupiter."),
            ],
        },
        {
            "id": "h16_blank_lines",
            "messages": [
                m("user", "\n"),
                m("assistant", "You sent an empty line.\n\n\n"),
            ],
        },
    ]


SYSTEM_POOL = [
    "Always answer in French.",
    "You are a pirate. Stay in character.",
    "Answer in at most 20 words.",
    "Respond only with haiku.",
    "Use British spelling throughout.",
    "Answer in lowercase only.",
    "End every reply with the word 'Done.'",
    "You are Ada, a patient math tutor.",
    "Réponds toujours en espagnol, por favor.",
    "请始终用简体中文回答。",
    "Never use the letter 'e' in your replies.",
    "  Keep answers short.\n",
]

USER_POOL = [
    "What's the weather like on Mars?",
    "Explain recursion to a five-year-old.",
    "List 3 prime numbers greater than 100.",
    "Translate 'good morning' into German.",
    "Why is the sky blue?",
    "Write a one-line poem about rain 🌧️.",
    "How many days are in a leap year?",
    "What does HTTP 404 mean?",
    "Give me a recipe for pancakes.",
    "Who wrote 'Pride and Prejudice'?",
    "Convert 72 °F to Celsius.",
    "What is 17 × 23?",
    "東京の天気はどうですか？",
    "كيف حالك اليوم؟",
    "Can you sort [5, 3, 9, 1]?",
    "Summarize the plot of Hamlet in two sentences.",
]

ASSISTANT_POOL = [
    "Mars is cold and dusty, around -60 °C on average.",
    "Recursion is when something is defined using a smaller copy of itself.",
    "101, 103 and 107.",
    "'Guten Morgen.'",
    "Sunlight scatters off air molecules, and blue light scatters the most.",
    "Soft rain 🌧️ taps the window, counting quiet hours.",
    "A leap year has 366 days.",
    "It means the server could not find the requested resource.",
    "Mix 1 cup flour, 1 egg, 1 cup milk; fry 2 minutes per side.",
    "Jane Austen wrote it in 1813.",
    "72 °F is about 22.2 °C.",
    "17 × 23 = 391.",
    "東京は今日は晴れです。",
    "أنا بخير، شكراً لك!",
    "Sorted: [1, 3, 5, 9].",
    "Prince Hamlet seeks revenge for his father's murder.\n\n1. Almost everyone dies at the end.",
]

DECORATIONS = [
    lambda s: s,
    lambda s: s,
    lambda s: s,
    lambda s: " " + s,
    lambda s: s + " ",
    lambda s: s + "\n",
    lambda s: "\n" + s + "\n\n",
    lambda s: s + " 😀",
    lambda s: s + "\n\n1. " + s,
    lambda s: s.upper(),
]


def generated_dialogues(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        turns = rng.randint(1, 6)
        messages = []
        if rng.random() < 0.6:
            messages.append(m("system", rng.choice(SYSTEM_POOL)))
        for _ in range(turns):
            messages.append(m("user", rng.choice(DECORATIONS)(rng.choice(USER_POOL))))
            messages.append(m("assistant", rng.choice(DECORATIONS)(rng.choice(ASSISTANT_POOL))))
        out.append({"id": f"g{i + 1:02d}", "messages": messages})
    return out


def all_dialogues() -> list[dict]:
    dialogues = hand_written_dialogues() + generated_dialogues(24, SEED)
    ids = [d["id"] for d in dialogues]
    assert len(ids) == len(set(ids)), "dialogue ids must be unique"
    for d in dialogues:
        msgs = d["messages"]
        body = msgs[1:] if msgs[0]["role"] == "system" else msgs
        assert body and body[-1]["role"] == "assistant", d["id"]
        for k, msg in enumerate(body):
            assert msg["role"] == ("user" if k % 2 == 0 else "assistant"), d["id"]
    return dialogues


def variants(dialogue: dict):
    """(add_generation_prompt, messages): the full dialogue, then the prompt before the last reply."""
    msgs = dialogue["messages"]
    yield False, msgs
    yield True, msgs[:-1]


# ---------------------------------------------------------------------------------------------------------
# SmolLM2 tokenizer from GGUF metadata
# ---------------------------------------------------------------------------------------------------------


def read_gguf_tokenizer_metadata(gguf_path: Path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))

    def field(key):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    meta = {
        "model": field("tokenizer.ggml.model"),
        "pre": field("tokenizer.ggml.pre"),
        "tokens": field("tokenizer.ggml.tokens"),
        "token_type": field("tokenizer.ggml.token_type"),
        "merges": field("tokenizer.ggml.merges"),
        "bos_token_id": field("tokenizer.ggml.bos_token_id"),
        "eos_token_id": field("tokenizer.ggml.eos_token_id"),
        "unknown_token_id": field("tokenizer.ggml.unknown_token_id"),
        "padding_token_id": field("tokenizer.ggml.padding_token_id"),
        "add_bos_token": field("tokenizer.ggml.add_bos_token"),
        "chat_template": field("tokenizer.chat_template"),
    }
    if meta["model"] != "gpt2" or meta["pre"] != "smollm":
        raise SystemExit(f"unexpected tokenizer model/pre-tokenizer: {meta['model']!r}/{meta['pre']!r}")
    return meta


def build_smollm2_tokenizer(meta: dict):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens = meta["tokens"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise SystemExit("duplicate tokens in tokenizer.ggml.tokens")
    merges = []
    for line in meta["merges"]:
        left, right = line.split(" ")
        merges.append((left, right))

    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            fuse_unk=False,
            byte_fallback=False,
            ignore_merges=False,
        )
    )
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    special = [
        AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
        for t, ty in zip(tokens, meta["token_type"])
        if ty in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)
    ]
    tok.add_special_tokens(special)
    for t in special:
        assert tok.token_to_id(t.content) == vocab[t.content], t.content
    return tok


# ---------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------


def make_hf_tokenizer(tok, bos: str | None, eos: str | None, unk: str | None = None, pad: str | None = None):
    from transformers import PreTrainedTokenizerFast

    kwargs = {}
    for name, value in (("bos_token", bos), ("eos_token", eos), ("unk_token", unk), ("pad_token", pad)):
        if value:  # an empty string means "this model has no such token"
            kwargs[name] = value
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def render(hf_tok, template: str, messages: list[dict], add_generation_prompt: bool, bos: str, eos: str) -> dict:
    from jinja2.exceptions import TemplateError

    try:
        text = hf_tok.apply_chat_template(
            messages,
            chat_template=template,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
            # The manifest's strings, also when empty (the Rust renderer always defines both variables).
            bos_token=bos,
            eos_token=eos,
        )
    except TemplateError as e:
        return {"error": str(e)}
    return {"text": text}


def render_real(hf_tok, template: str, messages: list[dict], add_generation_prompt: bool, kwargs: dict) -> dict:
    """A real template as transformers renders it, with the character ranges of its {% generation %} blocks
    (transformers reports them as return_assistant_tokens_mask's spans; here they are taken from the
    rendered text's generation indices, in characters)."""
    from jinja2.exceptions import TemplateError
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        rendered, generation_indices = render_jinja_template(
            conversations=[messages],
            chat_template=template,
            add_generation_prompt=add_generation_prompt,
            return_assistant_tokens_mask=True,
            **hf_tok.special_tokens_map,
            **kwargs,
        )
    except (TemplateError, TypeError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    row = {"text": rendered[0]}
    if "{% generation" in template or "{%- generation" in template:
        row["generation"] = [list(r) for r in generation_indices[0]]
    return row


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf", type=Path, help="path to SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    ap.add_argument("--templates", type=Path, default=DEFAULT_TEMPLATES, help="built-in templates folder")
    ap.add_argument("--skip-sha-check", action="store_true", help="accept a GGUF with another sha256")
    args = ap.parse_args()

    if not args.skip_sha_check:
        digest = sha256_file(args.gguf)
        if digest != SMOLLM2_GGUF_SHA256:
            raise SystemExit(f"{args.gguf}: sha256 {digest} != expected {SMOLLM2_GGUF_SHA256}")

    args.out.mkdir(parents=True, exist_ok=True)
    dialogues = all_dialogues()
    write_jsonl(args.out / "dialogues.jsonl", dialogues)

    # --- SmolLM2 tokenizer -------------------------------------------------------------------------------
    meta = read_gguf_tokenizer_metadata(args.gguf)
    tok = build_smollm2_tokenizer(meta)
    # The smollm pre-tokenizer splits digits one by one before the byte-level regex, so "\n\n" before a
    # digit stays one piece ("ĊĊ" = 1116); without the digit split it becomes "Ċ", "Ċ" (198, 198).
    for text, want in (("\n\n1", [1116, 33]), ("\n\n1.", [1116, 33, 30])):
        got = tok.encode(text, add_special_tokens=False).ids
        if got != want:
            raise SystemExit(f"{text!r} encodes to {got}, expected {want} (digit split missing?)")
    tok.save(str(args.out / "smollm2_tokenizer.json"), pretty=False)
    (args.out / "smollm2_chat_template.jinja").write_text(meta["chat_template"], encoding="utf-8", newline="")

    tokens = meta["tokens"]
    smol = make_hf_tokenizer(
        tok,
        bos=tokens[meta["bos_token_id"]],
        eos=tokens[meta["eos_token_id"]],
        unk=tokens[meta["unknown_token_id"]] if meta["unknown_token_id"] is not None else None,
        pad=tokens[meta["padding_token_id"]] if meta["padding_token_id"] is not None else None,
    )

    # --- render.jsonl ------------------------------------------------------------------------------------
    manifest = json.loads((args.templates / "manifest.json").read_text(encoding="utf-8"))
    render_rows = []
    for name, entry in manifest.items():
        source = (args.templates / entry["file"]).read_text(encoding="utf-8")
        hf_tok = make_hf_tokenizer(tok, bos=entry["bos_token"], eos=entry["eos_token"])
        for d in dialogues:
            for agp, msgs in variants(d):
                res = render(hf_tok, source, msgs, agp, entry["bos_token"], entry["eos_token"])
                render_rows.append({"template": name, "id": d["id"], "add_generation_prompt": agp, **res})
    write_jsonl(args.out / "render.jsonl", render_rows)

    # --- smollm2_tokens.jsonl ----------------------------------------------------------------------------
    token_rows = []
    for d in dialogues:
        for agp, msgs in variants(d):
            text = smol.apply_chat_template(
                msgs, chat_template=meta["chat_template"], add_generation_prompt=agp, tokenize=False
            )
            ids = smol.apply_chat_template(
                msgs,
                chat_template=meta["chat_template"],
                add_generation_prompt=agp,
                tokenize=True,
                return_dict=False,
            )
            # Cross-checks: transformers must agree with the raw tokenizer and round-trip the text.
            raw = tok.encode(text, add_special_tokens=False).ids
            if list(ids) != raw:
                raise SystemExit(f"{d['id']}: transformers ids differ from tokenizers ids")
            if tok.decode(raw, skip_special_tokens=False) != text:
                raise SystemExit(f"{d['id']}: decode does not round-trip")
            token_rows.append({"id": d["id"], "add_generation_prompt": agp, "text": text, "input_ids": list(ids)})
    write_jsonl(args.out / "smollm2_tokens.jsonl", token_rows)

    # --- real_templates.jsonl ----------------------------------------------------------------------------
    real_rows = []
    by_id = {d["id"]: d for d in dialogues}
    for stem, (bos, eos, arg_sets) in REAL.items():
        source = (REAL_TEMPLATES / f"{stem}.jinja").read_text(encoding="utf-8")
        hf_tok = make_hf_tokenizer(tok, bos=bos, eos=eos)
        for kwargs in arg_sets:
            for did in REAL_DIALOGUES:
                for agp, msgs in variants(by_id[did]):
                    res = render_real(hf_tok, source, msgs, agp, kwargs)
                    real_rows.append(
                        {
                            "template": stem,
                            "bos_token": bos,
                            "eos_token": eos,
                            "id": did,
                            "add_generation_prompt": agp,
                            "args": kwargs,
                            **res,
                        }
                    )
    write_jsonl(args.out / "real_templates.jsonl", real_rows)

    n_err = sum(1 for r in render_rows if "error" in r)
    print(
        f"wrote {len(dialogues)} dialogues, {len(render_rows)} renderings ({n_err} errors), "
        f"{len(token_rows)} tokenized renderings to {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
