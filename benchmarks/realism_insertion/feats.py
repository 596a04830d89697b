import os
SCRATCH = os.environ.get("REALISM_SCRATCH", "runs/realism_insertion")  # scratch folder of the experiment
import json, torch
from realize.data.models import load_model
from realize.scorers.realism import load_judge, JUDGE_MODEL
from realize.scorers.realism_features import extract_features, ALL_FEATURE_NAMES
rows = json.load(open(SCRATCH + "/dataset.json"))
lm = load_model("smollm2-135m-instruct"); judge = load_judge(JUDGE_MODEL)
x = extract_features(lm, [r["text"] for r in rows], judge=judge, use_cache=True)
torch.save({"x": x, "names": list(ALL_FEATURE_NAMES)}, SCRATCH + "/feats.pt")
print(x.shape)
