import os
SCRATCH = os.environ.get("REALISM_SCRATCH", "runs/realism_insertion")  # scratch folder of the experiment
import json, sys, torch
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe2.py")).read().split("for spec in")[0])
kind = sys.argv[1]
X, nm = cols("base"); cfg = RealismTrainConfig(hidden=8, l2=1e-3)
every = torch.tensor([s == kind for s in src]); keep = trainable & ~every
m = fit_classifier(X[tr & keep], y[tr & keep], nm, cfg, validation=(X[va & keep], y[va & keep]))
p = m.predict_proba(X)
neg = [(float(p[i]), rows[i]["text"]) for i in range(len(rows)) if every[i] and trainable[i]]
neg.sort(reverse=True)
print("threshold", m.threshold, "caught", sum(x < m.threshold for x, _ in neg), "/", len(neg))
for x, t in neg[:25]: print(f"NEG {x:.3f} {t}")
nats = sorted((float(p[i]), rows[i]["text"]) for i in range(len(rows)) if nat[i] and te[i])
for x, t in nats[:12]: print(f"NAT {x:.3f} {t}")
