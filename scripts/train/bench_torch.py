#!/usr/bin/env python3
"""CPU training-throughput benchmark of PyTorch `transformers` (full or LoRA),
as a reference for the Rust trainer.

Run (inside the reference venv, e.g. /work/pyenv):

    python scripts/train/bench_torch.py --model /work/exp/hf-smollm2 \
        --data masked.parquet --mode lora --steps 10 --batch-tokens 4096 \
        --threads 2 --lora-r 16 --lora-alpha 32 \
        --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj

    python scripts/train/bench_torch.py --model /work/exp/hf-smollm2 \
        --data masked.parquet --mode full --steps 10 --batch-tokens 4096 --threads 2

Data: Parquet with `input_ids` list<uint32> and `labels` list<int64> (aligned,
-100 = no loss, Hugging Face convention: the model shifts labels itself).

Batching mirrors gatt's `train::data::epoch_batches`: rows are shuffled
(--seed), each window of 64 is sorted by length, then rows are packed greedily
while longest_len * n_rows <= --batch-tokens (a single over-long row is a batch
by itself); batches are then shuffled.  The RNG differs from the Rust one, so
batches are alike in shape, not identical.  Use --order file to keep the file
order (no shuffling/sorting).  Each batch is right-padded to its longest row
(pad id = model's pad/eos id, label -100, attention_mask 0).  Batches are
cycled if --steps + warm-up exceeds their number.

Each step: forward (loss = token mean over the batch, as transformers
computes it), backward, optional grad-norm clip (--max-grad-norm, default 1.0
like gatt; 0 disables), torch.optim.AdamW(lr=--lr, betas 0.9/0.999, eps 1e-8,
weight_decay=--weight-decay, default 0.0 like gatt), zero_grad.  One warm-up
step (--warmup) is run first and not timed.

Output: one JSON object with tokens_per_s (real, non-padding tokens),
loss_tokens_per_s, padded_tokens_per_s, s_per_step, per-step times/losses,
peak_rss_mib (ru_maxrss), torch/transformers/peft versions, threads.
"""
import argparse
import json
import random
import resource
import sys
import time


def make_batches(lengths, budget, order, seed):
    idx = list(range(len(lengths)))
    rng = random.Random(seed)
    if order == "shuffle-sorted":
        rng.shuffle(idx)
        for s in range(0, len(idx), 64):
            idx[s:s + 64] = sorted(idx[s:s + 64], key=lambda i: lengths[i])
    batches, cur, longest = [], [], 0
    for i in idx:
        l = max(longest, lengths[i])
        if cur and l * (len(cur) + 1) > budget:
            batches.append(cur)
            cur, longest = [], 0
        longest = max(longest, lengths[i])
        cur.append(i)
    if cur:
        batches.append(cur)
    if order == "shuffle-sorted":
        rng.shuffle(batches)
    return batches


def main():
    ap = argparse.ArgumentParser(description="transformers CPU training throughput")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--mode", choices=["lora", "full"], default="lora")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps")
    ap.add_argument("--batch-tokens", type=int, default=4096,
                    help="budget: longest row * rows per batch")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-alpha", type=float, default=32.0)
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--rows", type=int, default=None, help="use only the first N rows")
    ap.add_argument("--order", choices=["shuffle-sorted", "file"], default="shuffle-sorted")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attn", default=None, help="attn_implementation (eager|sdpa); default: transformers'")
    args = ap.parse_args()

    import pyarrow.parquet as pq
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    if args.data.endswith(".jsonl"):
        rows = [json.loads(line) for line in open(args.data) if line.strip()]
        inputs = [r["input_ids"] for r in rows]
        labels = [r["labels"] for r in rows]
    else:
        table = pq.read_table(args.data, columns=["input_ids", "labels"])
        inputs = table.column("input_ids").to_pylist()
        labels = table.column("labels").to_pylist()
    if args.rows is not None:
        inputs, labels = inputs[: args.rows], labels[: args.rows]
    for n, (a, b) in enumerate(zip(inputs, labels)):
        if len(a) != len(b):
            raise SystemExit(f"row {n}: len(input_ids) != len(labels)")
    lengths = [len(a) for a in inputs]
    batches = make_batches(lengths, args.batch_tokens, args.order, args.seed)
    if not batches:
        raise SystemExit("no rows")

    kw = dict(dtype=torch.float32)
    if args.attn:
        kw["attn_implementation"] = args.attn
    model = AutoModelForCausalLM.from_pretrained(args.model, **kw)
    pad_id = model.config.pad_token_id
    if pad_id is None:
        pad_id = model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else 0
    peft_version = None
    if args.mode == "lora":
        import peft
        from peft import LoraConfig, get_peft_model
        peft_version = peft.__version__
        cfg = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0,
                         target_modules=[t.strip() for t in args.targets.split(",") if t.strip()],
                         bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=args.weight_decay)

    def tensors(batch):
        L = max(lengths[i] for i in batch)
        ids = torch.full((len(batch), L), pad_id, dtype=torch.long)
        lab = torch.full((len(batch), L), -100, dtype=torch.long)
        att = torch.zeros((len(batch), L), dtype=torch.long)
        for r, i in enumerate(batch):
            n = lengths[i]
            ids[r, :n] = torch.tensor(inputs[i], dtype=torch.long)
            lab[r, :n] = torch.tensor(labels[i], dtype=torch.long)
            att[r, :n] = 1
        real = int(att.sum())
        # tokens that carry loss after the model's internal shift
        loss_toks = int((lab[:, 1:] != -100).sum())
        return ids, lab, att, real, loss_toks, len(batch) * L

    def step(batch):
        ids, lab, att, real, loss_toks, padded = tensors(batch)
        t0 = time.perf_counter()
        out = model(input_ids=ids, attention_mask=att, labels=lab)
        out.loss.backward()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        return dt, float(out.loss.detach()), real, loss_toks, padded, ids.shape

    k = 0
    for _ in range(args.warmup):
        step(batches[k % len(batches)])
        k += 1
    times, losses, shapes = [], [], []
    real_sum = loss_sum = pad_sum = 0
    for _ in range(args.steps):
        dt, loss, real, lt, padded, shape = step(batches[k % len(batches)])
        k += 1
        times.append(dt)
        losses.append(loss)
        shapes.append(list(shape))
        real_sum += real
        loss_sum += lt
        pad_sum += padded
    total = sum(times)
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out = dict(
        mode=args.mode,
        steps=args.steps,
        warmup=args.warmup,
        tokens_per_s=real_sum / total if total else None,
        loss_tokens_per_s=loss_sum / total if total else None,
        padded_tokens_per_s=pad_sum / total if total else None,
        s_per_step=total / args.steps if args.steps else None,
        real_tokens=real_sum,
        loss_tokens=loss_sum,
        padded_tokens=pad_sum,
        step_seconds=[round(t, 4) for t in times],
        step_losses=losses,
        batch_shapes=shapes,
        n_batches=len(batches),
        n_rows=len(lengths),
        batch_tokens=args.batch_tokens,
        order=args.order,
        lr=args.lr,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        lora_r=args.lora_r if args.mode == "lora" else None,
        lora_alpha=args.lora_alpha if args.mode == "lora" else None,
        targets=args.targets if args.mode == "lora" else None,
        trainable_params=n_trainable,
        total_params=n_total,
        attn_implementation=getattr(model.config, "_attn_implementation", None),
        peak_rss_mib=round(ru / 1024.0, 1),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        peft=peft_version,
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
