"""Leave-one-kind-out AUC for feature sets / classifier settings (argv: specs 'set|hidden|l2', comma-separated)."""
import os
SCRATCH = os.environ.get("REALISM_SCRATCH", "runs/realism_insertion")  # scratch folder of the experiment
import json, sys, torch
from realize.scorers.realism import RealismTrainConfig, fit_classifier, auc
from realize.data.realism_dataset import NATURAL_SOURCES, MINED_NATURAL
rows = json.load(open(SCRATCH + "/dataset.json"))
F = torch.load(SCRATCH + "/feats.pt"); N = torch.load(SCRATCH + "/newfeats.pt")
key = json.load(open(SCRATCH + "/label/key.json"))
lab = {}
for k in range(4):
    for l in open(f"{SCRATCH}/label/part{k}.labels.tsv"):
        i, v = l.strip().split("\t"); lab[key[int(i)][0]] = int(v)
src = [r["source"] for r in rows]; split = [r["split"] for r in rows]
y = torch.tensor([float(r["label"]) for r in rows])
looks_natural = torch.tensor([lab.get(r["text"]) == 1 and r["source"] not in NATURAL_SOURCES for r in rows])
trainable = torch.tensor([s != MINED_NATURAL for s in src]) & ~looks_natural
tr = torch.tensor([s == "train" for s in split]); va = torch.tensor([s == "validation" for s in split])
te = torch.tensor([s == "test" for s in split]); nat = torch.tensor([s in NATURAL_SOURCES for s in src])
KINDS = ["word_swap_common", "word_merge", "function_drop", "local_shuffle", "mined_fluent", "function_dup", "subword_glue", "mined_beam", "mined_gcg", "token_swap", "lm_sample_t1.2"]
base = (F["x"], list(F["names"])); new = (N["x"], list(N["names"]))
def cols(which):
    X, nm = [], []
    for part in which.split("+"):
        if part == "base": X.append(base[0]); nm += base[1]
        elif part == "new": X.append(new[0]); nm += new[1]
        elif part == "repair": R = torch.load(SCRATCH + "/repair.pt"); X.append(R["x"]); nm += list(R["names"])
        elif part == "repair2": R = torch.load(SCRATCH + "/repair2.pt"); X.append(R["x"]); nm += list(R["names"])
        elif part == "gain": R = torch.load(SCRATCH + "/repair.pt"); X.append(R["x"][:, 2:]); nm += list(R["names"][2:])
        elif part == "newsmol": idx = [i for i, n in enumerate(new[1]) if not n.startswith(("judge_", "agree_"))]; X.append(new[0][:, idx]); nm += [new[1][i] for i in idx]
        elif part == "nojudge": idx = [i for i, n in enumerate(base[1]) if not n.startswith("judge_")]; X.append(base[0][:, idx]); nm += [base[1][i] for i in idx]
    return torch.cat(X, 1), tuple(nm)
for spec in sys.argv[1].split(","):
    which, hidden, l2 = spec.split("|")
    X, nm = cols(which); cfg = RealismTrainConfig(hidden=int(hidden), l2=float(l2))
    res = {}; passes = {}
    for kind in KINDS:
        every = torch.tensor([s == kind for s in src])
        keep = trainable & ~every
        m = fit_classifier(X[tr & keep], y[tr & keep], nm, cfg, validation=(X[va & keep], y[va & keep]))
        p = m.predict_proba(X)
        neg = every & trainable  # reader-judged natural corruptions are not negatives
        sel = (nat & te) | neg
        res[kind] = auc(p[sel], y[sel]); passes[kind] = float((p[nat & te] >= m.threshold).float().mean())
    print(f"{spec:28s} min={min(res[k] for k in KINDS[:6]):.3f} " + " ".join(f"{k[:9]}={res[k]:.3f}" for k in KINDS) + f" pass={min(passes.values()):.3f}", flush=True)
