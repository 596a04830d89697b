"""In-distribution AUC: every kind trained on, each near-natural kind's reader-checked test rows vs test naturals
(argv: feature sets as in probe2.py, comma-separated). The ceiling a held-out kind could reach with these features."""
import os
SCRATCH = os.environ.get("REALISM_SCRATCH", "runs/realism_insertion")  # scratch folder of the experiment
import sys, torch
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe2.py")).read().split("for spec in")[0])
for which in sys.argv[1].split(","):
    X, nm = cols(which); cfg = RealismTrainConfig(hidden=8, l2=1e-3)
    m = fit_classifier(X[tr & trainable], y[tr & trainable], nm, cfg, validation=(X[va & trainable], y[va & trainable]))
    p = m.predict_proba(X); out = []
    for kind in KINDS[:6]:
        neg = torch.tensor([s == kind for s in src]) & trainable & te
        sel = (nat & te) | neg; out.append(f"{kind[:9]}={auc(p[sel], y[sel]):.3f}({int(neg.sum())})")
    print(f"{which:24s}", " ".join(out), f"pass={float((p[nat & te] >= m.threshold).float().mean()):.3f}", flush=True)
