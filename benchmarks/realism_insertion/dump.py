import os
SCRATCH = os.environ.get("REALISM_SCRATCH", "runs/realism_insertion")  # scratch folder of the experiment
import json, random
from realize.data.models import load_model
from realize.data.realism_dataset import RealismDatasetConfig, build_realism_dataset, NEAR_NATURAL_SOURCES, NATURAL_SOURCES
os.makedirs(SCRATCH + "/label", exist_ok=True)
lm = load_model("smollm2-135m-instruct")
ds = build_realism_dataset(lm, RealismDatasetConfig(seed=0, mined_path="scorers/weights/realism_mined.jsonl"), use_cache=True)
rows = list(ds)
json.dump(rows, open(SCRATCH + "/dataset.json", "w"))
neg = [r for r in rows if r["source"] in NEAR_NATURAL_SOURCES]
nat = [r for r in rows if r["source"] in NATURAL_SOURCES]
rng = random.Random(1)
ctrl = rng.sample(nat, 180)
items = [(r["text"], r["source"]) for r in neg] + [(r["text"], "natural") for r in ctrl]
rng.shuffle(items)
print(len(neg), len(ctrl), len(items), len(rows))
json.dump(items, open(SCRATCH + "/label/key.json", "w"))
n = 4; size = (len(items) + n - 1) // n
for k in range(n):
    part = items[k*size:(k+1)*size]
    with open(f"{SCRATCH}/label/part{k}.txt", "w") as f:
        for i, (t, _) in enumerate(part):
            f.write(f"{k*size+i}\t{t}\n")
