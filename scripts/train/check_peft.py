"""Python peft loads a `gatt train` LoRA adapter and agrees with `gatt train merge`.

    python scripts/train/check_peft.py [--base BASE_HF_DIR] --adapter RUN/adapter --merged MERGED_DIR

BASE_HF_DIR: the base model as a Hugging Face folder (`gatt model export default --out DIR`).
Without --base, peft's `AutoPeftModelForCausalLM.from_pretrained(RUN/adapter)` finds the
base through the adapter's `base_model_name_or_path` (`gatt train` writes RUN/base).
Prints the largest logit difference between base+adapter (peft) and the merged folder
(transformers), and between the merged folder and the base (to show the adapter matters).
"""
import argparse
import json

import torch
from peft import AutoPeftModelForCausalLM, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("--base")
ap.add_argument("--adapter", required=True)
ap.add_argument("--merged", required=True)
args = ap.parse_args()
torch.set_num_threads(1)
tok = AutoTokenizer.from_pretrained(args.merged)
ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                              add_generation_prompt=True, return_tensors="pt")
if not isinstance(ids, torch.Tensor):
    ids = ids["input_ids"]
with torch.no_grad():
    if args.base:
        base = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32)
        base_logits = base(input_ids=ids).logits[0, -1]
        peft_model = PeftModel.from_pretrained(base, args.adapter)
    else:
        peft_model = AutoPeftModelForCausalLM.from_pretrained(args.adapter, dtype=torch.float32)
        with peft_model.disable_adapter():
            base_logits = peft_model(input_ids=ids).logits[0, -1]
    peft_logits = peft_model(input_ids=ids).logits[0, -1]
    merged = AutoModelForCausalLM.from_pretrained(args.merged, dtype=torch.float32)
    merged_logits = merged(input_ids=ids).logits[0, -1]
print(json.dumps({
    "loaded_by": "PeftModel (--base)" if args.base else "AutoPeftModelForCausalLM",
    "peft_vs_merged_max_abs_diff": float((peft_logits - merged_logits).abs().max()),
    "merged_vs_base_max_abs_diff": float((merged_logits - base_logits).abs().max()),
    "argmax": {"peft": int(peft_logits.argmax()), "merged": int(merged_logits.argmax()), "base": int(base_logits.argmax())},
}))
