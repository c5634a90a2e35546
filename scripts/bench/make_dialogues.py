#!/usr/bin/env python3
"""Deterministic generator of benchmark dialogues for `gatt mask`.

Writes N dialogue records as JSONL (`{"id", "messages": [{"role", "content"}]}`): 2-6 user
turns, each answered by the assistant (so every record ends with an assistant reply), an
optional system message, English prose with varied sentence lengths, some numbered and
bulleted lists, digits (years, amounts, measurements) and a little non-ASCII text. The
same seed always gives the same file.

With --tokenizer it tokenizes a sample of the records with the SmolLM2 chat template and
prints the average number of tokens per dialogue (target: about 700).

Usage:
    python scripts/bench/make_dialogues.py --n 20000 --out /tmp/dialogues.jsonl \
        [--seed 7] [--tokenizer tests/fixtures/golden/smollm2_tokenizer.json \
         --template tests/fixtures/golden/smollm2_chat_template.jinja] [--check-sample 2000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

# Length knobs, calibrated for about 700 SmolLM2 tokens per dialogue (chat markup included).
USER_SENTENCES = (1, 4)
REPLY_SENTENCES = (2, 6)
LIST_CHANCE = 0.35
SYSTEM_CHANCE = 0.5

TOPICS = [
    ("gardening", ["tomato plants", "the compost heap", "raised beds", "the soil", "seedlings", "the irrigation line"]),
    ("cooking", ["the sourdough starter", "a cast-iron pan", "the risotto", "the marinade", "fresh pasta", "the oven"]),
    ("personal finance", ["an emergency fund", "the monthly budget", "index funds", "the mortgage", "credit card debt", "a savings account"]),
    ("travel", ["the train pass", "a carry-on bag", "the itinerary", "travel insurance", "the hostel booking", "a rental car"]),
    ("programming", ["the build script", "a unit test", "the database schema", "the REST endpoint", "a memory leak", "the config file"]),
    ("fitness", ["a training plan", "the warm-up", "interval runs", "the squat form", "rest days", "a heart-rate monitor"]),
    ("home repair", ["the leaking tap", "a drywall patch", "the circuit breaker", "the window seal", "a squeaky hinge", "the boiler"]),
    ("history", ["the printing press", "the Hanseatic League", "the Silk Road", "the Industrial Revolution", "medieval guilds", "the Roman roads"]),
    ("astronomy", ["the Andromeda galaxy", "a refracting telescope", "the lunar eclipse", "Jupiter's moons", "light pollution", "the star chart"]),
    ("music", ["the chord progression", "a metronome", "the bass line", "finger exercises", "the old upright piano", "a home recording setup"]),
    ("writing", ["the opening chapter", "a character arc", "the outline", "dialogue tags", "the final draft", "a writing routine"]),
    ("photography", ["the aperture", "a prime lens", "the white balance", "golden-hour light", "the tripod", "RAW files"]),
]

NAMES = ["Maya", "Jonas", "Priya", "Tomás", "Aiko", "Léa", "Omar", "Grace", "Sven", "Zoë", "Mateo", "Chloé"]
CITIES = ["Lisbon", "Kraków", "Osaka", "São Paulo", "Montréal", "Reykjavík", "Nairobi", "Zürich", "Austin", "Melbourne"]
MONEY = ["euros", "dollars", "pounds", "francs"]
TIME_UNITS = ["minutes", "hours", "days", "weeks"]
UNICODE_BITS = ["café", "naïve", "résumé", "jalapeño", "façade", "déjà vu", "20 °C", "€45", "£12", "½ cup", "—", "→", "“good enough”", "✓", "🙂"]

OPENERS_USER = [
    "I have a question about {o}.",
    "Can you help me with {o}?",
    "I've been thinking about {o} for a while.",
    "Quick one about {o}.",
    "My friend {n} told me something about {o} and I'm not sure it's right.",
    "I'm trying to get better at {t}.",
    "So I started with {t} last month.",
    "Here's my situation with {o}.",
]
QUESTIONS = [
    "What would you do first?",
    "How long should {o} take, roughly?",
    "Is it worth spending {d} {m} on {o}?",
    "What are the most common mistakes people make with {o}?",
    "Could you compare {o} with {o2}?",
    "Which option is cheaper over {d} years?",
    "Why does {o} matter so much for {t}?",
    "Can you give me a short checklist?",
    "What should I avoid?",
    "Does the advice change if I live in {c}?",
    "How would you explain {o} to a beginner?",
    "Is there a simple rule of thumb?",
]
CONTEXT_USER = [
    "I only have about {d} hours a week for this.",
    "Last year I tried it once and it went badly.",
    "Money is a bit tight right now, so I'd rather not buy anything new.",
    "I live in a small flat in {c}, so space is limited.",
    "My budget is around {d} {m}.",
    "I read that {o} can make a big difference, but the articles disagree.",
    "{n} and I want to do this together.",
    "The deadline is in {d} days.",
]
SUBJECTS = [
    "{O}", "For most people, the plan", "A good approach", "The main trade-off", "In practice, {o}", "The first step",
    "Experience shows that {o}", "A simple test", "What usually works", "The tricky part",
]
PREDICATES = [
    "depends on how much time you can set aside each week",
    "works best when you keep it simple and consistent",
    "is easier to manage if you write things down as you go",
    "tends to fail when the plan is too ambitious at the start",
    "usually improves after {d} weeks of steady practice",
    "costs less than most people expect, often under {d} {m}",
    "should be checked again after about {d} {tu}",
    "is closely tied to {o2}, so it helps to look at both",
    "has changed a lot since {y}",
    "gives the best results when you measure before and after",
    "is not as complicated as it looks",
    "can be split into smaller steps that are easy to repeat",
]
TAILS = [
    "", "", "", ", especially if you are just starting out", ", which saves a lot of frustration later",
    " (around {p}% of the total effort)", ", and that is perfectly fine", " rather than all at once",
    ", according to a survey from {y}", ", as {n} found out in {c}",
]
CLOSERS = [
    "I hope this helps, and feel free to ask if anything is unclear.",
    "Let me know how it goes.",
    "If you share more details, I can make the plan more specific.",
    "Start small, and adjust once you see what works for you.",
    "That should be enough to get you going.",
    "",
]
LIST_INTROS = ["Here is a short plan:", "A few things to check:", "In order of importance:", "Steps:", "Options to consider:"]
LIST_ITEMS = [
    "Set a clear goal for {o}",
    "Measure where you are today",
    "Spend {d} {tu} on the basics before anything else",
    "Compare {o} with {o2}",
    "Write down what you change and when",
    "Review the results every {d} days",
    "Ask {n} for a second opinion",
    "Keep the total cost under {d} {m}",
    "Avoid changing more than one thing at a time",
    "Take a photo or a note at each step",
]
SYSTEM_PROMPTS = [
    "You are a helpful assistant. Answer clearly and concisely.",
    "You are a patient tutor who explains things step by step.",
    "Always answer in plain English, without jargon.",
    "You are a friendly assistant named {n}. Keep answers practical.",
    "Respond with short paragraphs and use lists where they help.",
]


class Gen:
    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def fill(self, s: str, topic: tuple[str, list[str]]) -> str:
        r = self.r
        objs = topic[1]
        o, o2 = r.sample(objs, 2)
        vals = {
            "o": o,
            "O": o[0].upper() + o[1:],
            "o2": o2,
            "t": topic[0],
            "n": r.choice(NAMES),
            "c": r.choice(CITIES),
            "m": r.choice(MONEY),
            "tu": r.choice(TIME_UNITS),
            "d": str(r.choice([2, 3, 5, 10, 12, 15, 20, 30, 45, 60, 90, 120, 250, 1500])),
            "y": str(r.randint(1990, 2024)),
            "p": str(r.randint(5, 95)),
        }
        return s.format(**vals)

    def sentence(self, topic) -> str:
        r = self.r
        s = f"{r.choice(SUBJECTS)} {r.choice(PREDICATES)}{r.choice(TAILS)}."
        s = self.fill(s, topic)
        if r.random() < 0.08:
            s = s[:-1] + f", a bit like {r.choice(UNICODE_BITS)}."
        if r.random() < 0.15:
            # A long, compound sentence.
            s = s[:-1] + "; " + self.fill(f"{r.choice(SUBJECTS).lower()} {r.choice(PREDICATES)}", topic) + "."
        return s[0].upper() + s[1:]

    def user(self, topic, first: bool) -> str:
        r = self.r
        parts = []
        if first or r.random() < 0.4:
            parts.append(self.fill(r.choice(OPENERS_USER), topic))
        for _ in range(r.randint(0, USER_SENTENCES[1] - 2)):
            parts.append(self.fill(r.choice(CONTEXT_USER), topic))
        parts.append(self.fill(r.choice(QUESTIONS), topic))
        text = " ".join(parts)
        if r.random() < 0.1:
            text = text.lower()
        if r.random() < 0.05:
            text += " " + r.choice(UNICODE_BITS)
        return text

    def reply(self, topic) -> str:
        r = self.r
        paras = []
        n = r.randint(*REPLY_SENTENCES)
        while n > 0:
            k = min(n, r.randint(1, 4))
            paras.append(" ".join(self.sentence(topic) for _ in range(k)))
            n -= k
        if r.random() < LIST_CHANCE:
            items = r.sample(LIST_ITEMS, r.randint(3, 6))
            numbered = r.random() < 0.6
            lines = [
                (f"{i}. " if numbered else "- ") + self.fill(it, topic) + ("." if r.random() < 0.5 else "")
                for i, it in enumerate(items, 1)
            ]
            paras.insert(r.randint(1, len(paras)), r.choice(LIST_INTROS) + "\n" + "\n".join(lines))
        closer = r.choice(CLOSERS)
        if closer:
            paras.append(closer)
        return "\n\n".join(paras)

    def dialogue(self, i: int) -> dict:
        r = self.r
        topic = r.choice(TOPICS)
        messages = []
        if r.random() < SYSTEM_CHANCE:
            messages.append({"role": "system", "content": self.fill(r.choice(SYSTEM_PROMPTS), topic)})
        for t in range(r.randint(2, 6)):
            messages.append({"role": "user", "content": self.user(topic, t == 0)})
            messages.append({"role": "assistant", "content": self.reply(topic)})
        return {"id": f"bench-{i:07d}", "messages": messages}


def average_tokens(path: Path, tokenizer: Path, template: Path, sample: int) -> dict:
    import jinja2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    tmpl = env.from_string(template.read_text())
    texts, turns = [], []
    with path.open() as f:
        for i, line in enumerate(f):
            if i >= sample:
                break
            d = json.loads(line)
            texts.append(tmpl.render(messages=d["messages"], add_generation_prompt=False))
            turns.append(sum(m["role"] == "user" for m in d["messages"]))
    encs = tok.encode_batch(texts, add_special_tokens=False)
    lens = sorted(len(e.ids) for e in encs)
    return {
        "sampled": len(lens),
        "avg_tokens": sum(lens) / len(lens),
        "min_tokens": lens[0],
        "median_tokens": lens[len(lens) // 2],
        "max_tokens": lens[-1],
        "avg_user_turns": sum(turns) / len(turns),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--tokenizer", type=Path)
    ap.add_argument("--template", type=Path)
    ap.add_argument("--check-sample", type=int, default=2000, help="dialogues tokenized for the average")
    args = ap.parse_args()

    g = Gen(args.seed)
    with args.out.open("w") as f:
        for i in range(args.n):
            f.write(json.dumps(g.dialogue(i), ensure_ascii=False) + "\n")
    info = {"dialogues": args.n, "out": str(args.out), "seed": args.seed}
    if args.tokenizer and args.template:
        info.update(average_tokens(args.out, args.tokenizer, args.template, args.check_sample))
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
