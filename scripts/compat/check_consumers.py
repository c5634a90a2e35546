"""Trains on gatt's exports with LLaMA-Factory and axolotl, as their users configure them.

Run by scripts/compat/check_consumers.sh, one consumer per venv:

  llamafactory DIR MODEL   LLaMA-Factory on DIR/{gatt,gatt-expand}/openai.jsonl (formatting
                           `sharegpt`, `mask_history: true`, template `smollm2`) and on
                           DIR/gatt/tokenized.parquet (saved with `save_to_disk` and named by
                           `tokenized_path`: LLaMA-Factory reads a pre-tokenized dataset only so)
  axolotl DIR MODEL        axolotl on DIR/{gatt,gatt-expand}/openai.jsonl (`type: chat_template`,
                           `message_field_training: weight`) and on
                           DIR/{gatt,gatt-expand}/tokenized.{parquet,jsonl} (no `type`: a
                           dataset with input_ids, attention_mask and labels is taken as it is)

DIR as check_exports.py's (`masked.parquet` and the exports of each policy); MODEL a Hugging
Face folder (`gatt model export default`).

For each case two checks:
  - `data`: every row the consumer prepared from the file (its own dataset pipeline, all
    rows) against gatt's masked.parquet: the same tokens, and labels equal to gatt's (or,
    where the consumer's template trains the text after the end-of-turn token, gatt's with
    exactly that text added: say which);
  - `train`: two steps of the consumer's own trainer (its CLI entry point in this process,
    batch of 4, lr 1e-4, float32, CPU), recording the step-1 batch and loss
    (`transformers.Trainer.compute_loss`, wrapped): the batch rows must be rows of gatt's
    masked.parquet (tokens and labels as above, padding removed), and the loss must equal
    a cross-entropy computed here over those rows' labels from a fresh copy of MODEL
    (check_exports.cross_entropy: float32 forward, one row at a time, token mean).

Also controls, which must differ from gatt's labels: the same file without the setting that
honours the mask (LLaMA-Factory without `mask_history`; axolotl without
`message_field_training`), so that the `data` check is seen to be able to fail.

Exit status 1 if any check fails. Prints one line per check.
"""

import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import check_exports  # noqa: E402
from check_exports import check, cross_entropy  # noqa: E402

ROWS = 4


def gatt_rows(root, policy):
    """gatt's (input_ids, labels) rows of `policy`, read with pyarrow (no consumer code)."""
    import pyarrow.parquet as pq

    t = pq.read_table(os.path.join(root, policy, "masked.parquet")).to_pylist()
    return [(tuple(r["input_ids"]), tuple(r["labels"])) for r in t]


def after_eot_tokens(model_dir):
    """The tokens the model's chat template writes after a reply's end-of-turn marker
    (SmolLM2: `\\n`), from its tokenizer (no consumer code)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], tokenize=False
    )
    eot = "<|im_end|>"
    tail = text[text.rindex(eot) + len(eot):]
    return tuple(tok.encode(tail, add_special_tokens=False)), tail


def with_after_eot(rows, after):
    """gatt's rows with `after` (the template's text after the final end-of-turn token)
    trained too: up to the last loss token as gatt's, then `after`, labelled. A row of
    gatt's that ends at the end-of-turn token (`gatt-expand`) gets `after` appended."""
    out = []
    for ids, labels in rows:
        last = max(i for i, l in enumerate(labels) if l != -100)
        rest = tuple(ids[last + 1:])
        assert rest in ((), after), rest
        out.append((tuple(ids[: last + 1]) + after, tuple(labels[: last + 1]) + after))
    return out


def trained(row):
    ids, labels = row
    return tuple(l for l in labels if l != -100)


def compare_data(name, got, want, tok=None, want_differs=False):
    """Checks that the consumer's prepared rows `got` are gatt's rows `want`, row by row
    (the consumers keep the file's order here): the trained tokens (the mask) must be
    equal; the rows token for token are counted, and each other row shown."""
    if want_differs:
        differ = sum(1 for a, b in zip(got, want) if trained(a) != trained(b))
        return check(len(got) == len(want) and differ > 0,
                     f"{name}: control: the trained tokens differ from gatt's in {differ} of "
                     f"{len(want)} rows")
    if not check(len(got) == len(want), f"{name}: {len(got)} rows prepared, gatt has {len(want)}"):
        return False
    same_mask = [i for i, (a, b) in enumerate(zip(got, want)) if trained(a) == trained(b)]
    exact = [i for i, (a, b) in enumerate(zip(got, want)) if a == b]
    ok = check(len(same_mask) == len(want),
               f"{name}: mask: every row trains exactly gatt's tokens "
               f"({len(same_mask)} of {len(want)} rows)")
    # Not a failure: the context before the trained reply is the consumer's rendering.
    print(f"note: {name}: rows token for token gatt's (context included): "
          f"{len(exact)} of {len(want)}")
    for i, (a, b) in enumerate(zip(got, want)):
        if a == b or tok is None:
            continue
        k = next((k for k, (x, y) in enumerate(zip(a[0], b[0])) if x != y), min(len(a[0]), len(b[0])))
        where = "in the trained tokens" if trained(a) != trained(b) else "in the context only"
        print(f"note:   row {i} differs {where}, from token {k}: consumer "
              f"{[tok.decode([t]) for t in a[0][max(0, k - 2):k + 4]]!r} gatt "
              f"{[tok.decode([t]) for t in b[0][max(0, k - 2):k + 4]]!r}")
    return ok


class Recorder:
    """Wraps transformers.Trainer.compute_loss to keep each training step's loss and batch."""

    def __init__(self):
        import transformers

        self.recorded = []
        base = transformers.Trainer.compute_loss
        rec = self.recorded

        def compute_loss(trainer, model, inputs, *args, **kwargs):
            seen = {k: v.detach().clone() for k, v in inputs.items() if hasattr(v, "clone")}
            out = base(trainer, model, inputs, *args, **kwargs)
            if model.training:
                return_outputs = kwargs.get("return_outputs", args[0] if args else False)
                loss = out[0] if return_outputs else out
                rec.append((float(loss.detach()), seen))
            return out

        transformers.Trainer.compute_loss = compute_loss
        self._restore = (transformers.Trainer, base)

    def close(self):
        cls, base = self._restore
        cls.compute_loss = base


def judge_train(name, recorded, model_dir, want_rows):
    """The step-1 batch is rows of gatt's (`want_rows`, tokens and labels), and its loss
    the cross-entropy over those gatt rows, computed here from a fresh copy of MODEL."""
    import torch
    from transformers import AutoModelForCausalLM

    if not check(len(recorded) >= 2, f"{name}: the trainer ran 2 steps ({len(recorded)} recorded)"):
        return
    (loss1, batch1), (loss2, _) = recorded[0], recorded[1]
    rows = check_exports.batch_rows(batch1)
    index = {r: i for i, r in enumerate(want_rows)}
    found = [index[r] for r in rows if r in index]
    if not check(len(rows) == ROWS and len(found) == len(rows),
                 f"{name}: the step-1 batch holds {len(rows)} rows, {len(found)} of them "
                 f"gatt's rows token for token (rows {sorted(found)})"):
        return
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref, n = cross_entropy(model, [(list(want_rows[i][0]), list(want_rows[i][1])) for i in found])
    rel = abs(loss1 - ref) / ref
    check(abs(loss1 - ref) < 1e-4,
          f"{name}: step-1 loss {loss1:.8f} vs cross-entropy over gatt's labels of those rows "
          f"{ref:.8f} ({n} tokens; relative difference {rel:.1e}); step-2 loss {loss2:.8f}")


# ---------------------------------------------------------------- LLaMA-Factory


def lf_args(model_dir, out, **extra):
    args = dict(
        stage="sft",
        do_train=True,
        model_name_or_path=model_dir,
        finetuning_type="full",
        template="smollm2",
        cutoff_len=4096,
        overwrite_cache=True,
        output_dir=out,
        overwrite_output_dir=True,
        per_device_train_batch_size=ROWS,
        gradient_accumulation_steps=1,
        max_steps=2,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
        plot_loss=False,
    )
    args.update(extra)
    return args


def lf_dataset_dir(path, work):
    """A dataset_dir whose dataset_info.json names `path` as `gatt` (the README's entry)."""
    d = tempfile.mkdtemp(dir=work)
    info = {
        "gatt": {
            "file_name": os.path.abspath(path),
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
    }
    with open(os.path.join(d, "dataset_info.json"), "w") as f:
        json.dump(info, f, indent=2)
    return d, info


def lf_prepared(args):
    """The rows LLaMA-Factory's SFT workflow prepares for `args` (its own functions)."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, _, _ = get_train_args(dict(args))
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    ds = module["train_dataset"]
    return [(tuple(r["input_ids"]), tuple(r["labels"])) for r in ds], tokenizer_module["tokenizer"]


def lf_train(name, args, model_dir, want_rows):
    from llamafactory.train.tuner import run_exp

    rec = Recorder()
    try:
        run_exp(dict(args))
    finally:
        rec.close()
    judge_train(name, rec.recorded, model_dir, want_rows)


def cmd_llamafactory(root, model_dir):
    import datasets
    import llamafactory
    import torch
    import transformers

    print(f"llamafactory {llamafactory.__version__}, transformers {transformers.__version__}, "
          f"datasets {datasets.__version__}, torch {torch.__version__}")
    torch.set_num_threads(2)
    after, after_text = after_eot_tokens(model_dir)
    print(f"the model's template writes {after_text!r} after a reply's end-of-turn token; "
          f"LLaMA-Factory's assistant slot ({{{{content}}}}<|im_end|>{after_text!r}) trains it: "
          f"it is added to gatt's labels for the comparison")
    work = tempfile.mkdtemp()
    out = os.path.join(work, "out")
    # `template` left out: LLaMA-Factory parses the model's own chat template (slots and
    # default system message). Its built-in `smollm2` template writes another default
    # system message (with a final "."), checked below as a variant.
    variants = [
        ("template left out (parsed from the model)", {}),
        ("template: smollm2", {"template": "smollm2"}),
        ("template: smollm2 + default_system", {
            "template": "smollm2",
            "default_system": "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        }),
    ]
    for policy in ("gatt", "gatt-expand"):
        want = with_after_eot(gatt_rows(root, policy), after)
        ddir, info = lf_dataset_dir(os.path.join(root, policy, "openai.jsonl"), work)
        if policy == "gatt":
            print(f"dataset_info.json: {json.dumps(info)}")
        for label, extra in variants if policy == "gatt" else variants[:1]:
            args = lf_args(model_dir, out, dataset="gatt", dataset_dir=ddir, mask_history=True,
                           disable_shuffling=True, **extra)
            if "template" not in extra:
                args.pop("template")
            got, tok = lf_prepared(args)
            name = f"LLaMA-Factory, {policy}/openai.jsonl (sharegpt, mask_history: true, {label})"
            compare_data(name, got, want, tok)
            if policy == "gatt" and not extra:
                lf_train(name, dict(args, max_samples=ROWS * 2), model_dir, want)
        args = lf_args(model_dir, out, dataset="gatt", dataset_dir=ddir, mask_history=False)
        args.pop("template")
        got_ctl, _ = lf_prepared(args)
        compare_data(f"LLaMA-Factory, {policy}/openai.jsonl without mask_history", got_ctl, want,
                     want_differs=True)

    # The pre-tokenized file: LLaMA-Factory loads a tokenized dataset only from a folder
    # written by `datasets.save_to_disk`, named by `tokenized_path`.
    want = gatt_rows(root, "gatt")
    tok_dir = os.path.join(work, "tokenized")
    datasets.load_dataset(
        "parquet", data_files=os.path.join(root, "gatt", "tokenized.parquet"), split="train"
    ).save_to_disk(tok_dir)
    print("tokenized_path: a folder written by "
          "`load_dataset('parquet', data_files='tokenized.parquet', split='train').save_to_disk(...)`")
    # LLaMA-Factory asks for a `dataset` even then (and ignores it: "Loading dataset from
    # disk will ignore other data arguments").
    ddir, _ = lf_dataset_dir(os.path.join(root, "gatt", "openai.jsonl"), work)
    args = lf_args(model_dir, out, dataset="gatt", dataset_dir=ddir, tokenized_path=tok_dir,
                   disable_shuffling=True)
    args.pop("template")
    name = "LLaMA-Factory, gatt/tokenized.parquet (tokenized_path)"
    got, tok = lf_prepared(args)
    compare_data(name, got, want, tok)
    lf_train(name, args, model_dir, want)


# ---------------------------------------------------------------- axolotl


def axo_config(model_dir, out, dataset, work):
    import yaml

    cfg = {
        "base_model": model_dir,
        "chat_template": "tokenizer_default",
        "datasets": [dataset],
        "dataset_prepared_path": os.path.join(work, "prepared"),
        "val_set_size": 0,
        "sequence_len": 4096,
        "sample_packing": False,
        "micro_batch_size": ROWS,
        "gradient_accumulation_steps": 1,
        "max_steps": 2,
        "num_epochs": 1,
        "learning_rate": 1e-4,
        "lr_scheduler": "constant",
        "optimizer": "adamw_torch",
        "output_dir": out,
        "bf16": False,
        "fp16": False,
        "tf32": False,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
        # The prepared rows in the file's order, for the row-by-row comparison (the
        # trainer still samples its batches at random).
        "shuffle_merged_datasets": False,
        "shuffle_before_merging_datasets": False,
        "dataset_num_proc": 1,
    }
    path = os.path.join(tempfile.mkdtemp(dir=work), "config.yml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path, cfg


def axo_prepared(config):
    """The rows axolotl prepares for `config` (`axolotl preprocess`'s own functions)."""
    from axolotl.cli.args import PreprocessCliArgs
    from axolotl.cli.config import load_cfg
    from axolotl.common.datasets import load_datasets

    cfg = load_cfg(config)
    meta = load_datasets(cfg=cfg, cli_args=PreprocessCliArgs())
    ds = meta.train_dataset
    return [(tuple(r["input_ids"]), tuple(r["labels"])) for r in ds]


def axo_train(name, config, model_dir, want_rows):
    from axolotl.cli.train import do_cli

    rec = Recorder()
    argv = sys.argv
    sys.argv = ["axolotl"]
    try:
        do_cli(config=config)
    finally:
        sys.argv = argv
        rec.close()
    judge_train(name, rec.recorded, model_dir, want_rows)


def chat_dataset(path, **extra):
    d = {
        "path": path,
        "ds_type": "json",
        "type": "chat_template",
        "field_messages": "messages",
        "message_field_training": "weight",
        "roles_to_train": ["assistant"],
        "train_on_eos": "turn",
    }
    d.update(extra)
    return {k: v for k, v in d.items() if v is not None}


def cmd_axolotl(root, model_dir):
    import axolotl
    import datasets
    import torch
    import transformers
    from transformers import AutoTokenizer

    print(f"axolotl {axolotl.__version__}, transformers {transformers.__version__}, "
          f"datasets {datasets.__version__}, torch {torch.__version__}")
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(model_dir)
    for policy in ("gatt", "gatt-expand"):
        want = gatt_rows(root, policy)
        work = tempfile.mkdtemp()
        out = os.path.join(work, "out")
        path = os.path.join(root, policy, "openai.jsonl")
        config, cfg = axo_config(model_dir, out, chat_dataset(path), work)
        if policy == "gatt":
            print(f"datasets: {json.dumps(cfg['datasets'])}")
        name = f"axolotl, {policy}/openai.jsonl (chat_template, message_field_training: weight)"
        compare_data(name, axo_prepared(config), want, tok)
        work = tempfile.mkdtemp()
        ctl, _ = axo_config(model_dir, out, chat_dataset(path, message_field_training=None), work)
        compare_data(f"axolotl, {policy}/openai.jsonl without message_field_training",
                     axo_prepared(ctl), want, want_differs=True)
        if policy == "gatt":
            axo_train(name, config, model_dir, want)
        for ext in ("parquet", "jsonl"):
            work = tempfile.mkdtemp()
            out = os.path.join(work, "out")
            ds = {"path": os.path.join(root, policy, f"tokenized.{ext}"),
                  "ds_type": "parquet" if ext == "parquet" else "json"}
            config, cfg = axo_config(model_dir, out, ds, work)
            if policy == "gatt" and ext == "parquet":
                print(f"datasets: {json.dumps(cfg['datasets'])}")
            name = f"axolotl, {policy}/tokenized.{ext} (no type: pre-tokenized)"
            compare_data(name, axo_prepared(config), want, tok)
            if policy == "gatt" and ext == "parquet":
                axo_train(name, config, model_dir, want)


# ---------------------------------------------------------------- Unsloth


def cmd_unsloth(root, model_dir):
    import unsloth  # first, as Unsloth asks: it patches transformers and TRL
    from unsloth import FastLanguageModel

    import datasets
    import torch
    import transformers
    import trl
    from trl import SFTConfig, SFTTrainer

    print(f"unsloth {unsloth.__version__}, transformers {transformers.__version__}, "
          f"trl {trl.__version__}, datasets {datasets.__version__}, torch {torch.__version__}, "
          f"cuda available: {torch.cuda.is_available()}")
    torch.set_num_threads(2)
    want = gatt_rows(root, "gatt")
    model, tok = FastLanguageModel.from_pretrained(
        model_name=model_dir, dtype=torch.float32, load_in_4bit=False, full_finetuning=True,
        max_seq_length=4096,
    )
    tokenized = datasets.load_dataset(
        "parquet", data_files=os.path.join(root, "gatt", "tokenized.parquet"), split="train"
    ).select(range(ROWS * 2))
    name = "Unsloth (FastLanguageModel + TRL SFTTrainer), gatt/tokenized.parquet"
    with tempfile.TemporaryDirectory() as out:
        rec = Recorder()
        try:
            t = SFTTrainer(
                model=model,
                processing_class=tok,
                train_dataset=tokenized,
                args=SFTConfig(
                    output_dir=out, per_device_train_batch_size=ROWS, max_steps=2,
                    learning_rate=1e-4, lr_scheduler_type="constant", logging_steps=1,
                    save_strategy="no", report_to=[], seed=0, bf16=False, fp16=False,
                    max_length=4096,
                ),
            )
            t.train()
        finally:
            rec.close()
    judge_train(name, rec.recorded, model_dir, want)


def main():
    cmds = {"llamafactory": cmd_llamafactory, "axolotl": cmd_axolotl, "unsloth": cmd_unsloth}
    if len(sys.argv) >= 4 and sys.argv[1] in cmds:
        cmds[sys.argv[1]](sys.argv[2], sys.argv[3])
    else:
        print(__doc__)
        sys.exit(2)
    print(f"{len(check_exports.FAILED)} failed")
    sys.exit(1 if check_exports.FAILED else 0)


if __name__ == "__main__":
    main()
