#!/usr/bin/env python3
"""Render every chat template llama.cpp keeps for its tests (models/templates/*.jinja) with transformers.

The fixture pins down, for each template x hard dialogue x add_generation_prompt, the text transformers
renders or the error it raises, so the Rust test (gatt/src/template/llamacpp_tests.rs) can check that
gatt renders each template exactly as transformers does, or refuses it.

The templates come from the pinned llama-cpp-python source distribution that gatt's tests fetch into
$GATT_HOME/reference/llama-cpp-python-0.3.36/templates/ (run `cargo test --features model-tests -p gatt
tokenizer::vectors` once to fetch them).

Usage:
    python scripts/golden/make_llamacpp_templates.py TEMPLATES_DIR [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import all_dialogues, variants, write_jsonl  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "golden" / "llamacpp_templates.jsonl"

# The hard cases: plain, system message, emoji and ZWJ, whitespace at the edges, marker look-alikes,
# six turns.
DIALOGUES = (
    "h01_basic",
    "h02_system_french",
    "h04_unicode_emoji",
    "h07_whitespace_edges",
    "h08_marker_lookalikes",
    "h11_six_turns",
)
BOS = "<s>"
EOS = "</s>"


def render(template: str, messages: list[dict], add_generation_prompt: bool) -> dict:
    from jinja2.exceptions import TemplateError
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        rendered, _ = render_jinja_template(
            conversations=[messages],
            chat_template=template,
            add_generation_prompt=add_generation_prompt,
            bos_token=BOS,
            eos_token=EOS,
        )
    except (TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    return {"text": rendered[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("templates", type=Path, help="folder of llama.cpp's *.jinja templates")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    by_id = {d["id"]: d for d in all_dialogues()}
    rows = []
    stems = sorted(p.stem for p in args.templates.glob("*.jinja"))
    if not stems:
        print(f"{args.templates}: no .jinja files", file=sys.stderr)
        return 2
    for stem in stems:
        source = (args.templates / f"{stem}.jinja").read_text(encoding="utf-8")
        digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
        for did in DIALOGUES:
            for agp, msgs in variants(by_id[did]):
                rows.append(
                    {
                        "template": stem,
                        "sha256": digest,
                        "id": did,
                        "add_generation_prompt": agp,
                        **render(source, msgs, agp),
                    }
                )
    write_jsonl(args.out, rows)
    errors = sum(1 for r in rows if "error" in r)
    print(f"{len(stems)} templates, {len(rows)} renderings ({errors} errors) -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
