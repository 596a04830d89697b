"""Mine the search's own outputs as hard negatives for the realism classifier (regenerates the shipped file).

For each target (the mean activation shift of one natural prompt from the `natural_prompts` corpus at a layer, on a
few `contexts`), three of realize's searches run at CPU-sized budgets, and every distinct prompt they leave behind
(trajectory points and frontiers) is recorded with its generator:

- `mined_beam`: LM-guided beam search (`realize.attacks.beam`), fluent by construction;
- `mined_gcg`: GCG started from natural-prompt retrieval (the target's own prompt excluded from the corpus), the
  engine that produced "Explain it like a recently child.";
- `mined_fluent`: the fluent Pareto search (`realize.attacks.fluent`) from the same retrieval start.

Prompts equal (case-insensitively) to a corpus item are dropped: they are natural, not search artefacts. Each row
records its target prompt and, for retrieval-started searches, the retrieved start (`parent`), so the training set
can put a mined prompt in the split of the natural it came from. The `positive_prompts` corpus is never used.

    python benchmarks/mine_realism_negatives.py --targets 16 --seed 0   # ~30-40 min on 2 loaded cores

Output: one JSON object per line (text, generator, target, parent, layer, seed), written atomically after every
target. The shipped `scorers/weights/realism_mined.jsonl` is this output for the first 8 targets of
`--targets 20 --seed 0` (the run was stopped there for time: ~8 min per target on 2 loaded cores) with a `label`
added **by hand** to every row, reading each prompt: 0 = unnatural (non-words, broken grammar, a fragment that
stops mid-phrase), 1 = natural-looking (a search output a user could have typed: "I'm really frustrated right
now."), null = unsure (dropped). Only label-0 rows are negatives; label-1 rows are a test-only check that fluent
search outputs still pass. `realize train-realism` reads the shipped file, so training is reproducible without
re-running searches; a re-mined file must be labelled again before use (unlabelled rows are ignored).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import torch

from realize.attacks import beam, fluent, gcg
from realize.attacks.baselines import natural_retrieval
from realize.attacks.objectives import activation_objective, estimate_generic
from realize.data.atomic import write_text_atomic
from realize.data.chat import chat_layout, encode
from realize.data.corpora import CORPUS_NAMES, load_corpus, split_contexts
from realize.data.models import load_model
from realize.data.shift import mean_shift, prompt_shifts

DEFAULT_OUT = Path("benchmarks/results/realism_mined_raw.jsonl")  # label it, then copy to scorers/weights/
LAYERS = (6, 9)  # alternated over targets


def _rows(texts: list[str], generator: str, target: str, parent: str | None, layer: int, seed: int,
          known: set[str]) -> list[dict[str, object]]:
    out = []
    for text in dict.fromkeys(t.strip() for t in texts):
        if len(text) >= 3 and text.lower() not in known:
            out.append({"text": text, "generator": generator, "target": target, "parent": parent,
                        "layer": layer, "seed": seed})
    return out


def mine(n_targets: int, seed: int, n_contexts: int, out: Path) -> list[dict[str, object]]:
    lm = load_model()
    tok = lm.tokenizer
    layout = chat_layout(tok)
    naturals = load_corpus("natural_prompts")
    known = {t.lower() for name in CORPUS_NAMES for t in load_corpus(name)}  # type: ignore[arg-type]
    contexts, _ = split_contexts(load_corpus("contexts"), 16, seed=seed)
    contexts = contexts[:n_contexts]
    targets = random.Random(seed).sample(naturals, n_targets)
    generic = {layer: estimate_generic(lm, layout, layer, contexts) for layer in LAYERS}
    rows: list[dict[str, object]] = []
    for k, target_prompt in enumerate(targets):
        layer, run_seed = LAYERS[k % len(LAYERS)], seed * 1000 + k
        started = time.time()
        shift = mean_shift(prompt_shifts(lm.model, layout, [encode(tok, target_prompt)],
                                         [encode(tok, c) for c in contexts], layer)[0])
        objective = activation_objective(lm, shift, layer, contexts, generic=generic[layer])
        b = beam.run(objective, lm, layout, beam.BeamConfig(beam_width=4, samples_per_beam=8, length=10,
                                                            seed=run_seed))
        rows += _rows([s.prompt for s in b.trajectory] + [b.best_prompt], "mined_beam", target_prompt, None, layer,
                      run_seed, known)
        pool = [p for p in naturals if p != target_prompt]
        retrieved = natural_retrieval(objective, pool, tok, keep=3)
        parent = retrieved.best_prompt
        g = gcg.run(objective, tok, layout, gcg.GCGConfig(steps=20, width=24, topk=48, seed=run_seed,
                                                           metrics_every=100),
                    init_ids=encode(tok, parent))
        rows += _rows([s.prompt for s in g.trajectory] + [g.best_prompt], "mined_gcg", target_prompt, parent, layer,
                      run_seed, known)
        f = fluent.run(objective, lm, layout, fluent.FluentConfig(lambdas=(0.0, 0.03, 0.3), steps=6, width=12,
                                                                   top_k=32, lm_top_k=48, seed=run_seed,
                                                                   max_frontier=12),
                       init=encode(tok, parent))
        rows += _rows([s.prompt for s in f.trajectory] + [str(p["prompt"]) for p in f.frontier], "mined_fluent",
                      target_prompt, parent, layer, run_seed, known)
        logging.info("target %d/%d %r layer %d: %d rows so far (%.0fs)", k + 1, n_targets, target_prompt, layer,
                     len(rows), time.time() - started)
        write_text_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=16, help="natural-prompt targets (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contexts", type=int, default=4, help="optimization contexts per objective (default 4)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(args.seed)
    rows = mine(args.targets, args.seed, args.contexts, args.out)
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r["generator"])] = counts.get(str(r["generator"]), 0) + 1
    print(f"wrote {args.out}: {len(rows)} prompts {counts}")


if __name__ == "__main__":
    main()
