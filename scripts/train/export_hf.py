#!/usr/bin/env python3
"""Export a llama-architecture GGUF to a Hugging Face folder (float32) and write
reference outputs used to cross-check the Rust trainer against PyTorch.

Run (inside the reference venv, e.g. /work/pyenv):

    python scripts/train/export_hf.py \
        --gguf ~/.cache/gatt/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf \
        --out /work/exp/hf-smollm2

Writes into --out:
  config.json, generation_config.json, model.safetensors, tokenizer.json,
  tokenizer_config.json (+ chat template) via save_pretrained;
  KEYS.txt   safetensors key names/shapes, GGUF tensor types, and the result of
             checking the q/k row permutation (GGUF vs HF layout);
  REF.json   greedy next-token reference for a chat-templated prompt.

q/k permutation: llama.cpp's convert_hf_to_gguf.py permutes the rows of
attn_q / attn_k per head (HF "rotate-half" layout -> interleaved-pair layout).
transformers' GGUF loader (LlamaTensorProcessor._reverse_permute_weights)
undoes it.  This script verifies that numerically against the raw GGUF tensors
read with the `gguf` package.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch


def permute_hf_to_gguf(w, n_head):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (HF -> GGUF rows)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermute_gguf_to_hf(w, n_head):
    """Inverse: GGUF rows -> HF rows (what transformers does on load)."""
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompt", default="What is the capital of France?")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, AutoTokenizer
    import transformers

    folder, name = os.path.split(os.path.abspath(os.path.expanduser(args.gguf)))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                 dtype=torch.float32)
    model.eval()
    # transformers 5.x attaches a GgufHfQuantizer even when (as for llama,
    # which goes through the legacy loader) every weight was dequantized into
    # plain float32 nn.Linear/nn.Embedding modules; it then refuses
    # save_pretrained.  Check that nothing is still packed, then detach it.
    bad = [n for n, m in model.named_modules()
           if type(m).__name__.lower().startswith("gguf")]
    assert not bad, f"packed GGUF modules remain: {bad[:3]}"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        if hasattr(model, attr):
            try:
                setattr(model, attr, False if attr == "is_quantized" else None)
            except Exception:
                pass
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tok.save_pretrained(args.out)
    # transformers 5.x writes the chat template to chat_template.jinja only;
    # also put it into tokenizer_config.json for tools that look there.
    tc_path = os.path.join(args.out, "tokenizer_config.json")
    with open(tc_path) as fh:
        tc = json.load(fh)
    if tok.chat_template and "chat_template" not in tc:
        tc["chat_template"] = tok.chat_template
        with open(tc_path, "w") as fh:
            json.dump(tc, fh, indent=2, ensure_ascii=False)
    cfg = model.config

    # ---- KEYS.txt: safetensors keys/shapes ------------------------------
    from safetensors import safe_open
    lines = []
    with safe_open(os.path.join(args.out, "model.safetensors"), "pt") as f:
        keys = sorted(f.keys())
        lines.append(f"# model.safetensors: {len(keys)} tensors "
                     f"(transformers {transformers.__version__}, torch {torch.__version__})")
        lines.append(f"# tie_word_embeddings={cfg.tie_word_embeddings} "
                     f"lm_head.weight present={'lm_head.weight' in keys}")
        for k in keys:
            t = f.get_slice(k)
            lines.append(f"{k}\t{list(t.get_shape())}\t{t.get_dtype()}")
        st = {k: f.get_tensor(k) for k in keys if ".layers.0." in k or "embed" in k}

    # ---- q/k permutation check against the raw GGUF tensors --------------
    import gguf
    r = gguf.GGUFReader(os.path.join(folder, name))
    types = {}
    raw = {}
    for t in r.tensors:
        types.setdefault(t.tensor_type.name, []).append(t.name)
        if t.name.startswith("blk.0.") or t.name == "token_embd.weight":
            arr = gguf.dequantize(t.data, t.tensor_type)
            # GGUF dims are reversed relative to numpy/torch (ne0 = columns)
            raw[t.name] = np.asarray(arr, dtype=np.float32).reshape(
                [int(x) for x in reversed(t.shape)])
    n_head = cfg.num_attention_heads
    n_kv = cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    lines.append("")
    lines.append("# GGUF tensor types: " + ", ".join(
        f"{k}={len(v)}" for k, v in sorted(types.items())))
    for k, v in sorted(types.items()):
        if len(v) < 10:
            lines.append(f"#   {k}: {v}")
    lines.append(f"# n_head={n_head} n_kv_head={n_kv} head_dim={head_dim} "
                 f"rope_theta={getattr(cfg, 'rope_theta', None) or cfg.rope_parameters}")
    findings = {}
    for gname, hname, nh in [("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", n_head),
                             ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", n_kv),
                             ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight", n_kv),
                             ("blk.0.attn_output.weight", "model.layers.0.self_attn.o_proj.weight", n_head),
                             ("token_embd.weight", "model.embed_tokens.weight", n_head)]:
        g = raw[gname]
        h = st[hname].numpy()
        same = bool(np.array_equal(g, h))
        unperm = bool(np.array_equal(unpermute_gguf_to_hf(g, nh), h)) if g.shape[0] % (2 * nh) == 0 else None
        roundtrip = bool(np.array_equal(permute_hf_to_gguf(h, nh), g)) if g.shape[0] % (2 * nh) == 0 else None
        findings[hname] = dict(gguf=gname, shape=list(h.shape), identical_to_gguf=same,
                               equals_unpermute_of_gguf=unperm,
                               permute_of_hf_equals_gguf=roundtrip)
        lines.append(f"# {hname} vs {gname}: identical={same} "
                     f"hf==unpermute(gguf, n_head={nh})={unperm} "
                     f"permute(hf)==gguf={roundtrip}")
    # all layers: q/k equal unpermute(gguf), v/o equal gguf as stored
    from safetensors.numpy import load_file
    allst = load_file(os.path.join(args.out, "model.safetensors"))
    n_ok = n_chk = 0
    for t in r.tensors:
        for tag, hn, nh, perm in ((".attn_q.", "q_proj", n_head, True), (".attn_k.", "k_proj", n_kv, True),
                                  (".attn_v.", "v_proj", n_kv, False), (".attn_output.", "o_proj", n_head, False)):
            if tag in t.name and t.name.endswith(".weight"):
                layer = int(t.name.split(".")[1])
                g = np.asarray(gguf.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(
                    [int(x) for x in reversed(t.shape)])
                h = allst[f"model.layers.{layer}.self_attn.{hn}.weight"]
                n_chk += 1
                n_ok += bool(np.array_equal(unpermute_gguf_to_hf(g, nh) if perm else g, h))
    lines.append(f"# all layers: {n_ok}/{n_chk} attention weights match "
                 f"(q,k: hf == unpermute(gguf); v,o: hf == gguf)")
    lines.append("# Mapping (per head h, head_dim D, half=D/2, p in [0,half), s in {0,1}):")
    lines.append("#   GGUF row h*D + 2p + s  ==  HF row h*D + s*half + p   (q: n_head heads, k: n_kv_head heads)")
    with open(os.path.join(args.out, "KEYS.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")

    # ---- REF.json: greedy next-token logits --------------------------------
    msgs = [{"role": "user", "content": args.prompt}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # BatchEncoding in newer transformers
        ids = ids["input_ids"]
    ids = [int(x) for x in ids]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].float()
    am = int(torch.argmax(logits))
    ref = dict(
        model=name, dtype="float32", prompt=args.prompt, prompt_text=text,
        prompt_ids=ids, n_prompt=len(ids),
        last_logits_first10=[float(x) for x in logits[:10]],
        argmax=am, argmax_token=tok.decode([am]), argmax_logit=float(logits[am]),
        top5=[int(x) for x in torch.topk(logits, 5).indices],
        torch=torch.__version__, transformers=transformers.__version__,
        qk_permutation=findings,
    )
    with open(os.path.join(args.out, "REF.json"), "w") as fh:
        json.dump(ref, fh, indent=1)
    print(json.dumps({k: ref[k] for k in ("n_prompt", "argmax", "argmax_token", "last_logits_first10")}))
    print("\n".join(l for l in lines if l.startswith("# ")))


if __name__ == "__main__":
    sys.exit(main())
