"""500 user scripts of 8 turns each, drawn (seeded) from the training half of the user
bank (../../gatt-smollm2/inputs/train_users.jsonl): record i feeds dialogue i of the
500-dialogue job, so no two dialogues share a script."""
import json
import random
from pathlib import Path

here = Path(__file__).parent
bank = here.parent.parent / "gatt-smollm2" / "inputs" / "train_users.jsonl"
turns = [m["content"] for line in bank.open() for m in json.loads(line)["messages"]]
turns = sorted(set(turns))
rng = random.Random(500)
with (here / "train_users8.jsonl").open("w") as f:
    for i in range(500):
        msgs = [{"role": "user", "content": t} for t in rng.sample(turns, 8)]
        f.write(json.dumps({"id": f"s{i}", "messages": msgs}, ensure_ascii=False) + "\n")
print(len(turns), "distinct training user turns")
