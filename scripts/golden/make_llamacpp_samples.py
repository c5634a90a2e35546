#!/usr/bin/env python3
"""Token ids llama.cpp gives real chat templates rendered with real vocabularies.

For each (template, vocabulary) pair below and each hard dialogue, the full conversation and the
inference prompt (all but the final reply, with the generation prompt) are rendered with transformers
(whose rendering gatt matches on every template of llama.cpp's collection: llamacpp_templates.jsonl) and
tokenized by llama.cpp itself (llama-cpp-python, `Llama(vocab_only=True).tokenize(text, add_bos=False,
special=True)`), as llama.cpp's server tokenizes a rendered chat prompt. The Rust test
(gatt/src/mask/llamacpp_tests.rs) masks the same dialogues with gatt and checks that the sample's ids are
llama.cpp's and that the loss starts exactly where llama.cpp's prompt ends.

BOS and EOS are the vocabulary's own (`tokenizer.ggml.bos_token_id`/`eos_token_id`), as gatt takes them
for a `--template FILE.jinja`; a built-in template's are those of templates/chat/manifest.json where set.

Usage (the vocabularies and templates are those the tests fetch into $GATT_HOME/reference/):
    python scripts/golden/make_llamacpp_samples.py REFERENCE_DIR [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import all_dialogues, write_jsonl  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "golden" / "llamacpp_samples.jsonl"
BUILTIN = REPO_ROOT / "templates" / "chat"

# (template: a stem of llama.cpp's collection, or builtin:NAME for templates/chat/NAME.jinja, vocabulary,
#  optional template arguments as apply_chat_template(**kwargs) takes them)
PAIRS = [
    ("meta-llama-Llama-3.1-8B-Instruct", "llama-bpe"),
    ("meta-llama-Llama-3.2-3B-Instruct", "llama-bpe"),
    ("meta-llama-Llama-3.3-70B-Instruct", "llama-bpe"),
    ("Qwen-Qwen2.5-7B-Instruct", "qwen2"),
    ("Qwen-QwQ-32B", "qwen2"),
    ("Qwen3.5-4B", "qwen35"),
    ("microsoft-Phi-3.5-mini-instruct", "phi-3"),
    ("CohereForAI-c4ai-command-r7b-12-2024-tool_use", "command-r"),
    ("builtin:llama2", "llama-spm"),
    ("builtin:mistral", "llama-spm"),
    ("builtin:phi3", "phi-3"),
    ("builtin:chatml", "qwen2"),
    ("google-gemma-4-31B-it", "gemma-4"),
    ("google-gemma-4-31B-it", "gemma-4", {"enable_thinking": True}),
]
DIALOGUES = (
    "h01_basic",
    "h02_system_french",
    "h04_unicode_emoji",
    "h05_cjk",
    "h06_arabic_rtl",
    "h07_whitespace_edges",
    "h11_six_turns",
    "h12_numbers",
    "h16_blank_lines",
)


def template_source(ref: Path, name: str) -> str:
    if name.startswith("builtin:"):
        return (BUILTIN / f"{name.removeprefix('builtin:')}.jinja").read_text(encoding="utf-8")
    return (ref / "templates" / f"{name}.jinja").read_text(encoding="utf-8")


def render(
    template: str, messages: list[dict], add_generation_prompt: bool, bos: str, eos: str, args: dict
) -> str | None:
    from jinja2.exceptions import TemplateError
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        rendered, _ = render_jinja_template(
            conversations=[messages],
            chat_template=template,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos,
            eos_token=eos,
            **args,
        )
    except (TemplateError, TypeError) as e:
        print(f"  refused by the template: {e}", file=sys.stderr)
        return None
    return rendered[0]


def main() -> int:
    import gguf
    from llama_cpp import Llama

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reference", type=Path, help="$GATT_HOME/reference/llama-cpp-python-0.3.36")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    import llama_cpp

    by_id = {d["id"]: d for d in all_dialogues()}
    rows = []
    models: dict[str, tuple] = {}
    for template_name, vocab, *rest in PAIRS:
        targs = rest[0] if rest else {}
        if vocab not in models:
            path = args.reference / f"ggml-vocab-{vocab}.gguf"
            reader = gguf.GGUFReader(str(path))
            tokens = reader.fields["tokenizer.ggml.tokens"].contents()
            bos = tokens[reader.fields["tokenizer.ggml.bos_token_id"].contents()]
            eos = tokens[reader.fields["tokenizer.ggml.eos_token_id"].contents()]
            models[vocab] = (Llama(model_path=str(path), vocab_only=True, verbose=False), bos, eos)
        llm, bos, eos = models[vocab]
        if template_name.startswith("builtin:"):
            entry = json.loads((BUILTIN / "manifest.json").read_text())[template_name.removeprefix("builtin:")]
            bos = entry["bos_token"] or bos
            eos = entry["eos_token"] or eos
        source = template_source(args.reference, template_name)
        digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
        print(f"{template_name} x {vocab} (bos {bos!r}, eos {eos!r})", file=sys.stderr)
        for did in DIALOGUES:
            msgs = by_id[did]["messages"]
            full = render(source, msgs, False, bos, eos, targs)
            prompt = render(source, msgs[:-1], True, bos, eos, targs)
            if full is None or prompt is None:
                continue
            tok = lambda text: llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)  # noqa: E731
            rows.append(
                {
                    "template": template_name,
                    "sha256": digest,
                    "vocab": vocab,
                    "args": targs,
                    "id": did,
                    "full_ids": tok(full),
                    "prompt_ids": tok(prompt),
                }
            )
    write_jsonl(args.out, rows)
    print(f"{len(rows)} samples with llama-cpp-python {llama_cpp.__version__} -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
