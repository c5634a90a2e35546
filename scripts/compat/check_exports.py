"""Checks gatt's exports with the libraries trainers use (issue 17).

Two parts, run by scripts/compat/check_exports.sh (which also writes the files):

  load DIR            every .parquet and .jsonl under DIR loads with `datasets`
                      (`load_dataset("parquet" | "json", ...)`), with exactly the columns
                      its layout promises, and the exports of one masking run agree row
                      by row (tokenized == masked; openai's last message == completion).
  train DIR MODEL     two steps of the HF `Trainer` (+ DataCollatorForSeq2Seq) on
                      tokenized.parquet, and of TRL's `SFTTrainer` on tokenized.parquet
                      and on prompt_completion.parquet, each from MODEL (a Hugging Face
                      folder, e.g. `gatt model export default`). For each it records the
                      batch the trainer built and its step-1 loss, and compares them with
                      gatt's masked.parquet: the tokens, the labels, and the loss against
                      a cross-entropy computed here over gatt's labels (float32, one row
                      at a time, no padding).

DIR holds `dialogues.parquet` and one folder per policy (`gatt`, `gatt-expand`) with
`masked.parquet`, `tokenized.{parquet,jsonl}`, `prompt_completion.{parquet,jsonl}` and
`openai.jsonl`. Exit status 1 if any check fails. Prints one line per check.
"""

import json
import math
import os
import sys
import tempfile

FAILED = []


def check(ok, what):
    print(f"{'ok' if ok else 'FAIL'}: {what}")
    if not ok:
        FAILED.append(what)
    return ok


def files(root):
    out = []
    for base, _, names in os.walk(root):
        for n in sorted(names):
            if n.endswith((".parquet", ".jsonl")):
                out.append(os.path.join(base, n))
    return sorted(out)


EXPECTED = {
    "tokenized": ["input_ids", "attention_mask", "labels"],
    "prompt_completion": ["prompt", "completion"],
    "openai": ["messages"],
    "masked": ["id", "input_ids", "labels", "attention_mask", "n_tokens", "n_loss_tokens"],
    "dialogues": ["id", "messages", "instruction", "constraints", "meta"],
}


def load(path):
    import datasets

    kind = "parquet" if path.endswith(".parquet") else "json"
    return datasets.load_dataset(kind, data_files=path, split="train")


def cmd_load(root):
    import datasets
    import pyarrow

    print(f"datasets {datasets.__version__}, pyarrow {pyarrow.__version__}")
    loaded = {}
    for path in files(root):
        rel = os.path.relpath(path, root)
        try:
            d = load(path)
        except Exception as e:  # noqa: BLE001 - report whatever the loader raises
            check(False, f"{rel}: load_dataset: {type(e).__name__}: {e}")
            continue
        stem = os.path.basename(path).split(".")[0]
        want = EXPECTED.get(stem)
        check(
            want is None or d.column_names == want,
            f"{rel}: {d.num_rows} rows, columns {d.column_names}",
        )
        loaded[rel] = d
    for policy in ("gatt", "gatt-expand"):
        masked = loaded.get(f"{policy}/masked.parquet")
        if masked is None:
            continue
        for ext in ("parquet", "jsonl"):
            t = loaded.get(f"{policy}/tokenized.{ext}")
            if t is None:
                continue
            same = t.num_rows == masked.num_rows and all(
                list(a["input_ids"]) == list(b["input_ids"])
                and list(a["labels"]) == list(b["labels"])
                and list(a["attention_mask"]) == list(b["attention_mask"])
                for a, b in zip(t, masked)
            )
            check(same, f"{policy}/tokenized.{ext} rows == masked.parquet rows")
        o = loaded.get(f"{policy}/openai.jsonl")
        for ext in ("parquet", "jsonl"):
            pc = loaded.get(f"{policy}/prompt_completion.{ext}")
            if o is None or pc is None:
                continue
            agree = o.num_rows == pc.num_rows == masked.num_rows
            for a, b in zip(o, pc):
                msgs = a["messages"]
                weights = [m.get("weight") for m in msgs if m["role"] == "assistant"]
                agree &= weights[-1] == 1 and all(w == 0 for w in weights[:-1])
                agree &= msgs[-1]["content"] == b["completion"][0]["content"]
                agree &= [m["content"] for m in msgs[:-1]] == [m["content"] for m in b["prompt"]]
            check(agree, f"{policy}/openai.jsonl == prompt_completion.{ext} (weights 0 ... 0 1)")


def cross_entropy(model, rows):
    """Token-mean cross-entropy over `rows` of (input_ids, labels), one row at a time."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in rows:
            logits = model(torch.tensor([ids])).logits[0, :-1].double()
            target = torch.tensor(labels[1:])
            keep = target != -100
            ce = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
            total += float(ce)
            count += int(keep.sum())
    return total / count, count


def recording(base):
    """`base` (a Trainer class) that keeps each step's loss and batch."""

    class Recording(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            seen = {k: v.clone() for k, v in inputs.items() if hasattr(v, "clone")}
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = out[0] if return_outputs else out
            self.recorded.append((float(loss.detach()), seen))
            return out

    return Recording


def batch_rows(inputs):
    """The (input_ids, labels) rows of a padded batch, padding removed, sorted."""
    rows = []
    mask = inputs.get("attention_mask")
    for i in range(inputs["input_ids"].shape[0]):
        ids = inputs["input_ids"][i].tolist()
        labels = inputs["labels"][i].tolist()
        keep = mask[i].tolist() if mask is not None else [1] * len(ids)
        rows.append((
            tuple(x for x, k in zip(ids, keep) if k),
            tuple(x for x, k in zip(labels, keep) if k),
        ))
    return sorted(rows)


def cmd_train(root, model_dir, rows=4):
    import datasets
    import torch
    import transformers
    import trl
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"trl {trl.__version__}, datasets {datasets.__version__}")
    torch.manual_seed(0)
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(model_dir)

    def model():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)

    masked = load(os.path.join(root, "gatt", "masked.parquet")).select(range(rows))
    gatt_rows = [(list(r["input_ids"]), list(r["labels"])) for r in masked]
    # TRL's prompt-completion trains every token after the prompt: gatt's loss tokens and
    # the template's text after the final end-of-turn token.
    plus_rows = []
    for ids, labels in gatt_rows:
        last = max(i for i, l in enumerate(labels) if l != -100)
        plus_rows.append((ids, labels[: last + 1] + ids[last + 1 :]))
    ref, n = cross_entropy(model(), gatt_rows)
    ref_plus, n_plus = cross_entropy(model(), plus_rows)
    print(f"reference: cross-entropy over gatt's labels {ref:.8f} ({n} tokens); "
          f"with the text after the end of turn {ref_plus:.8f} ({n_plus} tokens)")
    suffix = {tuple(ids[max(i for i, l in enumerate(lab) if l != -100) + 1 :]) for ids, lab in gatt_rows}
    print(f"text after the final end-of-turn token: {[tok.decode(list(s)) for s in suffix]!r}")

    def args(cls, out, **extra):
        return cls(
            output_dir=out,
            per_device_train_batch_size=rows,
            max_steps=2,
            learning_rate=1e-4,
            lr_scheduler_type="constant",
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            seed=0,
            **extra,
        )

    def judge(name, trainer, want_rows, want_loss):
        trainer.train()
        (loss1, batch1), (loss2, _) = trainer.recorded[0], trainer.recorded[1]
        got_rows = batch_rows(batch1)
        want = sorted((tuple(i), tuple(l)) for i, l in want_rows)
        check(got_rows == want, f"{name}: the step-1 batch holds gatt's tokens and labels")
        rel = abs(loss1 - want_loss) / want_loss
        check(rel < 1e-5, f"{name}: step-1 loss {loss1:.8f} vs cross-entropy {want_loss:.8f} "
                          f"(relative difference {rel:.1e}); step-2 loss {loss2:.8f}")

    with tempfile.TemporaryDirectory() as out:
        tokenized = load(os.path.join(root, "gatt", "tokenized.parquet")).select(range(rows))
        t = recording(Trainer)(
            model=model(),
            args=args(TrainingArguments, out),
            train_dataset=tokenized,
            data_collator=DataCollatorForSeq2Seq(tok, padding=True),
        )
        t.recorded = []
        judge("HF Trainer + DataCollatorForSeq2Seq, tokenized.parquet", t, gatt_rows, ref)

        from trl import SFTConfig, SFTTrainer

        # SFTConfig turns bf16 on by default (autocast, also on the CPU); the comparison
        # is made in float32, as the Trainer's above.
        t = recording(SFTTrainer)(
            model=model(),
            args=args(SFTConfig, out, bf16=False),
            train_dataset=tokenized,
            processing_class=tok,
        )
        t.recorded = []
        judge("TRL SFTTrainer, tokenized.parquet", t, gatt_rows, ref)

        pc = load(os.path.join(root, "gatt", "prompt_completion.parquet")).select(range(rows))
        t = recording(SFTTrainer)(
            model=model(),
            args=args(SFTConfig, out, bf16=False),
            train_dataset=pc,
            processing_class=tok,
        )
        t.recorded = []
        judge("TRL SFTTrainer, prompt_completion.parquet (gatt's labels + the text after "
              "the end of turn)", t, plus_rows, ref_plus)


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "load":
        cmd_load(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "train":
        cmd_train(sys.argv[2], sys.argv[3])
    else:
        print(__doc__)
        sys.exit(2)
    print(f"{len(FAILED)} failed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
