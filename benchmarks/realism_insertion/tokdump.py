"""Per-token statistics of every dataset text under one model (prompt alone after BOS, then EOS)."""
import os
SCRATCH = os.environ.get("REALISM_SCRATCH", "runs/realism_insertion")  # scratch folder of the experiment
import json, sys, torch
from realize.data.models import load_model
from realize.data.chat import encode
from realize.scorers.realism import load_judge, JUDGE_MODEL
from realize.scorers.perplexity import token_statistics
from realize.scorers.realism_words import token_spans
which, out = sys.argv[1], sys.argv[2]
lm = load_model("smollm2-135m-instruct") if which == "smol" else load_judge(JUDGE_MODEL)
rows = json.load(open(SCRATCH + "/dataset.json"))
texts = [r["text"] for r in rows]
tok = lm.tokenizer
enc = [encode(tok, t)[:256] for t in texts]
bos = [] if tok.bos_token_id is None else [int(tok.bos_token_id)]
eos = [int(tok.eos_token_id)]
vocab = int(lm.model.get_output_embeddings().weight.shape[0])
st = token_statistics(lm, [bos] * len(texts), [e + eos for e in enc], batch_size=32,
                      max_batch_tokens=max(258, 200_000_000 // vocab), show_progress=True, with_entropy=(which == "smol"))
res = []
for t, e, s in zip(texts, enc, st):
    res.append({"ids": e, "spans": token_spans(tok, t, e), "s": s.surprisal.tolist(), "h": s.entropy.tolist(), "r": s.rank.tolist()})
torch.save(res, out)
print("done", len(res))
