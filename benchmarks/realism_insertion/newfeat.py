"""Candidate word-level features from per-token dumps (both LMs)."""
import os
SCRATCH = os.environ.get("REALISM_SCRATCH", "runs/realism_insertion")  # scratch folder of the experiment
import json, math, torch
from realize.scorers.realism_words import split_words, word_pieces, MAX_ZIPF_COST, FUNCTION_WORDS
NAMES = ["pair_excess_max", "top2_excess_sum", "spill_excess", "n_excess_gt3", "n_excess_gt5", "max_log_rank",
         "second_log_rank", "max_first_piece_s", "func_excess_max", "content_excess_max", "min_excess", "last_word_excess"]
def word_arrays(text, d):
    words = split_words(text)
    pieces = word_pieces(words, d["spans"])
    s = d["s"][:len(d["ids"])]; r = d["r"][:len(d["ids"])]
    ex, fp, lr, fw = [], [], [], []
    for w, idx in zip(words, pieces):
        if not idx or max(idx) >= len(s): continue
        ex.append(sum(s[i] for i in idx) - min(w.unigram_cost, MAX_ZIPF_COST))
        fp.append(s[idx[0]]); lr.append(max(math.log1p(r[i]) for i in idx)); fw.append(w.text.lower() in FUNCTION_WORDS)
    return ex, fp, lr, fw
def feats(text, d):
    ex, fp, lr, fw = word_arrays(text, d)
    if not ex: return [0.0] * len(NAMES)
    pair = max((a + b for a, b in zip(ex, ex[1:])), default=ex[0])
    srt = sorted(ex, reverse=True)
    k = max(range(len(ex)), key=lambda i: ex[i])
    lrs = sorted(lr, reverse=True)
    fe = [e for e, f in zip(ex, fw) if f]; ce = [e for e, f in zip(ex, fw) if not f]
    return [pair, sum(srt[:2]), ex[k + 1] if k + 1 < len(ex) else 0.0, float(sum(e > 3 for e in ex)), float(sum(e > 5 for e in ex)),
            lrs[0], lrs[1] if len(lrs) > 1 else 0.0, max(fp), max(fe, default=-5.0), max(ce, default=-5.0), min(ex), ex[-1]]
def agree(text, ds, dg):
    es, _, _, _ = word_arrays(text, ds); eg, _, _, _ = word_arrays(text, dg)
    if not es or len(es) != len(eg): return [0.0, 0.0]
    m = [min(a, b) for a, b in zip(es, eg)]
    pairs = [min(a + b, c + d) for a, b, c, d in zip(es, es[1:], eg, eg[1:])]
    return [max(m), max(pairs, default=m[0])]
def build():
    rows = json.load(open(SCRATCH + "/dataset.json"))
    S = torch.load(SCRATCH + "/tok_smol.pt"); G = torch.load(SCRATCH + "/tok_gemma.pt")
    X = []
    for r, ds, dg in zip(rows, S, G):
        X.append(feats(r["text"], ds) + [f for f in feats(r["text"], dg)] + agree(r["text"], ds, dg))
    names = NAMES + ["judge_" + n for n in NAMES] + ["agree_max_min_excess", "agree_pair_excess"]
    return torch.tensor(X, dtype=torch.float32), names
if __name__ == "__main__":
    X, names = build()
    torch.save({"x": X, "names": names}, SCRATCH + "/newfeats.pt"); print(X.shape)
