"""Makes the experiment's inputs from the built-in catalogs and user bank.

- languages5.json: the five languages the default model writes at all (French, Spanish,
  German, Italian, Portuguese); both training and evaluation use them.
- figures_/hobbies_ train.json (even entries) and heldout.json (odd entries): evaluation
  uses only figures and hobbies never seen in training.
- train_users.jsonl: 400 dialogues of 4 user turns drawn from the even entries of the
  user bank; heldout_bank.json: the odd entries, for evaluation's user turns.

Run from the repository root: python3 docs/experiments/gatt-smollm2/inputs/make_inputs.py
"""
import json
import random
from pathlib import Path

out = Path(__file__).parent
cat = Path("templates/catalogs")
bank = json.load(open("templates/users/bank.json"))["messages"]
rng = random.Random(7)
with open(out / "train_users.jsonl", "w") as f:
    for i in range(400):
        msgs = rng.sample(bank[0::2], 4)
        f.write(json.dumps({"id": f"u{i}", "messages": [{"role": "user", "content": m} for m in msgs]}) + "\n")
json.dump({"messages": bank[1::2]}, open(out / "heldout_bank.json", "w"), indent=1)
json.dump(json.load(open(cat / "languages.json"))[:5], open(out / "languages5.json", "w"), indent=1)
for kind in ["figures", "hobbies"]:
    c = json.load(open(cat / f"{kind}.json"))
    json.dump(c[0::2], open(out / f"{kind}_train.json", "w"), indent=1)
    json.dump(c[1::2], open(out / f"{kind}_heldout.json", "w"), indent=1)
