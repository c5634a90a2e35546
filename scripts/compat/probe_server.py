#!/usr/bin/env python3
"""Probes an OpenAI-compatible server for the request fields gatt's HTTP backend relies on.

Usage: probe_server.py BASE_URL MODEL [--context N] [--no-too-long]

Sends one small request per question (standard library only, no client package) and prints
one JSON object per line: {"probe": NAME, "status": HTTP status, "verdict": ..., "detail": ...}.
`verdict` is what the answer shows: "honoured", "ignored", "refused" (a 4xx), "error" (5xx
or no answer), or a value (a finish_reason, a count). The questions:

- models: GET /v1/models answers (gatt's liveness check);
- basic: a chat completion with gatt's fields (model, messages, max_tokens, temperature,
  seed, top_p) parses as gatt parses it (choices[0].message.content, usage);
- seed: the same seed at temperature 1 gives the same reply twice, another seed another;
- n: n=2 gives two choices;
- logprobs: logprobs=true gives choices[0].logprobs;
- chat_template_kwargs: a kwarg the template reads is honoured (detected by a prompt whose
  token count changes: `add_generation_prompt` is not touchable, so a custom kwarg is
  sent and the answer's acceptance is recorded);
- top_k, repetition_penalty: accepted or refused (gatt drops a refused one);
- stop: a stop string cuts the reply there;
- max_tokens: max_tokens=3 gives finish_reason "length";
- too_long: a prompt longer than the context (--context N tokens, default 8192) is refused
  with a 4xx (what gatt reports as bad input) or something else (`--no-too-long` skips it);
- wrong_model: a model name the server does not serve.
"""

import json
import sys
import time
import urllib.error
import urllib.request


def call(method, url, body=None, timeout=300):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    t0 = time.time()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
        text = e.read().decode(errors="replace")
    except Exception as e:  # connection refused, reset, timeout
        return None, f"{type(e).__name__}: {e}", time.time() - t0
    return status, text, time.time() - t0


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    base = args[0].rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    model = args[1]
    context = 8192
    if "--context" in args:
        context = int(args[args.index("--context") + 1])
    chat = base + "/chat/completions"
    msgs = [{"role": "user", "content": "Name three colours."}]

    def emit(probe, status, verdict, detail=""):
        print(json.dumps({"probe": probe, "status": status, "verdict": verdict,
                          "detail": str(detail)[:300]}), flush=True)

    def complete(extra, messages=msgs):
        body = {"model": model, "messages": messages, "max_tokens": 24, "temperature": 0.0}
        body.update(extra)
        status, text, secs = call("POST", chat, body)
        try:
            obj = json.loads(text) if status == 200 else None
        except ValueError:
            obj = None
        return status, text, obj

    def content(obj, i=0):
        return obj["choices"][i]["message"]["content"]

    status, text, _ = call("GET", base + "/models", timeout=15)
    emit("models", status, "honoured" if status == 200 else "error", text)

    status, text, obj = complete({"seed": 1, "top_p": 0.9})
    if obj is not None and "choices" in obj:
        emit("basic", status, "honoured",
             {"content": content(obj), "usage": obj.get("usage"),
              "finish_reason": obj["choices"][0].get("finish_reason")})
    else:
        emit("basic", status, "error", text)

    replies = []
    for seed in (7, 7, 8):
        status, text, obj = complete({"seed": seed, "temperature": 1.0, "max_tokens": 32})
        replies.append(content(obj) if obj else None)
    if None in replies:
        emit("seed", status, "refused" if status and 400 <= status < 500 else "error", text)
    else:
        same = replies[0] == replies[1]
        differs = replies[0] != replies[2]
        emit("seed", 200, "honoured" if same and differs else
             ("ignored" if not same else "same reply for every seed (not sampling)"), replies)

    status, text, obj = complete({"n": 2, "temperature": 1.0, "seed": 3})
    if obj:
        emit("n", status, f"{len(obj['choices'])} choices", [c["message"]["content"] for c in obj["choices"]])
    else:
        emit("n", status, "refused" if status and 400 <= status < 500 else "error", text)

    status, text, obj = complete({"logprobs": True, "top_logprobs": 2, "max_tokens": 4})
    if obj:
        lp = obj["choices"][0].get("logprobs")
        emit("logprobs", status, "honoured" if lp else "ignored", lp)
    else:
        emit("logprobs", status, "refused" if status and 400 <= status < 500 else "error", text)

    status, text, obj = complete({"chat_template_kwargs": {"enable_thinking": False}})
    emit("chat_template_kwargs", status, "accepted" if obj else
         ("refused" if status and 400 <= status < 500 else "error"), text if not obj else "")

    for field, value in (("top_k", 40), ("repetition_penalty", 1.1)):
        status, text, obj = complete({field: value})
        emit(field, status, "accepted" if obj else
             ("refused" if status and 400 <= status < 500 else "error"), text if not obj else "")

    # Does a strong penalty change the greedy reply under each name? (llama.cpp reads
    # `repeat_penalty`; vLLM, SGLang and TGI read `repetition_penalty`.) Each is compared
    # with the reply to a request without either field.
    status, text, obj = complete({"max_tokens": 48})
    plain = content(obj) if obj else None
    for field in ("repetition_penalty", "repeat_penalty"):
        status, text, obj = complete({"max_tokens": 48, field: 1.8})
        if obj is None or plain is None:
            emit(field + "_effect", status, "refused" if status and 400 <= status < 500 else "error", text)
        else:
            emit(field + "_effect", status, "changes the reply" if content(obj) != plain else "no effect",
                 content(obj))
    # A server-side default penalty shows as a difference between "no field" and 1.0.
    status, text, obj = complete({"max_tokens": 48, "repeat_penalty": 1.0})
    if obj is not None and plain is not None:
        emit("default_penalty", status, "none" if content(obj) == plain
             else "the server penalizes when no repeat_penalty is sent", content(obj))
    else:
        emit("default_penalty", status, "not probed (repeat_penalty refused)", text)

    status, text, obj = complete({"max_tokens": 48})
    full = content(obj) if obj else ""
    words = full.split()
    stop_word = words[2] if len(words) > 2 else None
    if stop_word:
        status, text, obj = complete({"max_tokens": 48, "stop": [stop_word]})
        if obj:
            cut = content(obj)
            verdict = "ignored"
            if len(cut) < len(full):
                verdict = "honoured, stop text kept" if cut.endswith(stop_word) else "honoured"
            emit("stop", status, verdict,
                 {"stop": stop_word, "reply": cut, "finish_reason": obj["choices"][0].get("finish_reason")})
        else:
            emit("stop", status, "refused" if status and 400 <= status < 500 else "error", text)
    else:
        emit("stop", None, "not probed", full)

    status, text, obj = complete({"max_tokens": 3})
    if obj:
        emit("max_tokens", status, obj["choices"][0].get("finish_reason"),
             {"reply": content(obj), "usage": obj.get("usage")})
    else:
        emit("max_tokens", status, "error", text)

    if "--no-too-long" in args:
        emit("too_long", None, "not probed")
    else:
        too_long(complete, context, emit)

    status, text, obj = complete({"model": "no-such-model"})
    emit("wrong_model", status, "answered" if obj else
         ("refused" if status and 400 <= status < 500 else "error"), text if not obj else "")


def too_long(complete, context, emit):
    # About 1.1 tokens a word on this text; a reply is asked for too.
    long_text = "apple banana cherry " * (context // 2)
    status, text, obj = complete({"max_tokens": 8}, [{"role": "user", "content": long_text}])
    if obj:
        emit("too_long", status, "answered " + str(obj["choices"][0].get("finish_reason")), obj.get("usage"))
    else:
        emit("too_long", status, "refused" if status and 400 <= status < 500 else "error", text)


if __name__ == "__main__":
    main()
