"""Swap / split / delete repair features under SmolLM2: does one small edit make the whole text more likely?"""
import os
SCRATCH = os.environ.get("REALISM_SCRATCH", "runs/realism_insertion")  # scratch folder of the experiment
import json, sys, torch
from realize.data.models import load_model
from realize.data.chat import encode
from realize.scorers.realism_words import split_words, word_pieces, MAX_ZIPF_COST
torch.set_num_threads(2)
lm = load_model("smollm2-135m-instruct"); tok = lm.tokenizer
rows = json.load(open(SCRATCH + "/dataset.json")); S = torch.load(SCRATCH + "/tok_smol.pt")
bos, eos = [int(tok.bos_token_id)], [int(tok.eos_token_id)]
def seq(t): return bos + encode(tok, t)[:126] + eos
def lp_batch(seqs, B=48):
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i])); out = [0.0] * len(seqs)
    for k in range(0, len(order), B):
        idx = order[k:k + B]; n = max(len(seqs[i]) for i in idx)
        ids = torch.tensor([seqs[i] + [0] * (n - len(seqs[i])) for i in idx])
        mask = torch.tensor([[1] * len(seqs[i]) + [0] * (n - len(seqs[i])) for i in idx])
        with torch.no_grad():
            logits = lm.model(input_ids=ids, attention_mask=mask).logits
        for b, i in enumerate(idx):
            L = len(seqs[i]); lp = torch.log_softmax(logits[b, :L - 1].float(), -1)
            out[i] = float(lp.gather(1, torch.tensor(seqs[i][1:])[:, None]).sum())
        if k % (B * 40) == 0: print(k, len(seqs), flush=True)
    return out
TYPES = ("swap", "split", "delete")
cands, owner = [], []
for j, (r, d) in enumerate(zip(rows, S)):
    text = r["text"]; words = split_words(text); pieces = word_pieces(words, d["spans"]); s = d["s"]
    ex = []
    for w, idx in zip(words, pieces):
        ex.append(sum(s[i] for i in idx if i < len(s)) - min(w.unigram_cost, MAX_ZIPF_COST) if idx else -99.0)
    order = sorted(range(len(words)), key=lambda i: -ex[i])
    # swap: neighbours around the two most surprising words (not the first pair)
    sw = []
    for i in order[:2]:
        for a in (i - 1, i):
            if a >= 1 and a + 1 < len(words) and (a not in sw): sw.append(a)
    for a in sw[:2]:
        w1, w2 = words[a], words[a + 1]
        t2 = text[:w1.start] + w2.text + text[w1.end:w2.start] + w1.text + text[w2.end:]
        cands.append(t2); owner.append((j, "swap"))
    # split: multi-piece words, at the piece boundary with the most surprising continuation piece
    sp = []
    for wi in order:
        idx = pieces[wi]
        if len(idx) >= 2:
            k = max(idx[1:], key=lambda t: s[t] if t < len(s) else -1)
            cut = d["spans"][k][0]
            if words[wi].start < cut < words[wi].end: sp.append(cut)
        if len(sp) >= 2: break
    for cut in sp:
        cands.append(text[:cut] + " " + text[cut:]); owner.append((j, "split"))
    # delete: the two most surprising words (with one neighbouring space)
    for wi in order[:2]:
        if len(words) < 3: break
        w = words[wi]; end = w.end + 1 if w.end < len(text) and text[w.end] == " " else w.end
        t2 = (text[:w.start] + text[end:]).strip()
        if t2: cands.append(t2); owner.append((j, "delete"))
print("candidates", len(cands), flush=True)
base = lp_batch([seq(r["text"]) for r in rows])
var = lp_batch([seq(t) for t in cands])
gain = {t: [-20.0] * len(rows) for t in TYPES}
for (j, t), v in zip(owner, var): gain[t][j] = max(gain[t][j], v - base[j])
X = torch.tensor([[gain[t][j] for t in TYPES] for j in range(len(rows))])
torch.save({"x": X, "names": [f"{t}_gain_max" for t in TYPES]}, SCRATCH + "/repair2.pt"); print("done", X.shape)
