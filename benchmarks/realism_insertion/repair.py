"""Insertion-repair features: is there a function word whose insertion makes the text more likely?"""
import os
SCRATCH = os.environ.get("REALISM_SCRATCH", "runs/realism_insertion")  # scratch folder of the experiment
import json, sys, torch
from realize.data.models import load_model
from realize.data.chat import encode
from realize.scorers.perplexity import fix_heap_fragmentation
fix_heap_fragmentation()
torch.set_num_threads(2)
lm = load_model("smollm2-135m-instruct"); tok = lm.tokenizer
FW = "the a an to of in is are was for on with my your it be and that at by as this from not".split()
fids = []
for w in FW:
    ids = encode(tok, " " + w)
    if len(ids) == 1: fids.append(ids[0])
fids_t = torch.tensor(fids)
rows = json.load(open(SCRATCH + "/dataset.json"))
texts = [r["text"] for r in rows]
bos, eos = [int(tok.bos_token_id)], [int(tok.eos_token_id)]
seqs = [bos + encode(tok, t)[:126] + eos for t in texts]
def total_lp(batch):
    """sum log p of tokens 1.. of each sequence; and per-position (logp actual, max fw logp, argmax fw)."""
    n = max(len(s) for s in batch)
    ids = torch.tensor([s + [0] * (n - len(s)) for s in batch]); mask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in batch])
    with torch.no_grad():
        logits = lm.model(input_ids=ids, attention_mask=mask).logits.float()
    out = []
    for b, s in enumerate(batch):
        lp = torch.log_softmax(logits[b, : len(s) - 1], -1)
        act = lp.gather(1, torch.tensor(s[1:])[:, None]).squeeze(1)
        fw = lp[:, fids_t]; fmax, farg = fw.max(1)
        out.append((float(act.sum()), act, fmax, farg))
    return out
def batched(seqlist, B=48):
    order = sorted(range(len(seqlist)), key=lambda i: len(seqlist[i])); res = [None] * len(seqlist)
    for k in range(0, len(order), B):
        idx = order[k:k + B]
        for i, r in zip(idx, total_lp([seqlist[i] for i in idx])): res[i] = r
        if k % (B * 20) == 0: print(k, len(seqlist), flush=True)
    return res
base = batched(seqs)
cands, owners, feats = [], [], []
for j, (s, (tot, act, fmax, farg)) in enumerate(zip(seqs, base)):
    # position p in s (1..len-2) is a text token; predicted at row p-1. word-initial tokens only, not the first text token
    gaps = []
    for p in range(2, len(s) - 1):
        piece = tok.convert_ids_to_tokens(s[p])
        if not piece.startswith(("Ġ", "▁")): continue
        gaps.append((float(fmax[p - 1] - act[p - 1]), p, fids[int(farg[p - 1])]))
    gaps.sort(reverse=True)
    feats.append([max((g for g, _, _ in gaps), default=-10.0), float(sum(g > 2 for g, _, _ in gaps))])
    for g, p, f in gaps[:3]:
        cands.append(s[:p] + [f] + s[p:]); owners.append((j, tot))
print("candidates", len(cands), flush=True)
var = batched(cands)
gain = [-10.0] * len(seqs)
for (j, tot), r in zip(owners, var): gain[j] = max(gain[j], r[0] - tot)
X = torch.tensor([f + [g] for f, g in zip(feats, gain)])
torch.save({"x": X, "names": ["fw_gap_max", "n_fw_gap_gt2", "insert_gain_max"]}, SCRATCH + "/repair.pt")
print("done", X.shape)
