"""Realism scoring throughput: prompts per minute of `realism_scores` with the shipped classifier (SmolLM2 features +
the Gemma judge) and with the judge-free one (`scorers/weights/realism_fast.json`), on a mix of natural prompts and
their corruptions (features recomputed, no cache; models loaded before timing).

    python benchmarks/bench_realism.py --n 400
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from _setup import machine, write_json
from realize.data.corpora import load_corpus
from realize.data.models import load_model
from realize.scorers.realism.corruptions import near_natural_corruptions
from realize.scorers.realism import DEFAULT_WEIGHTS, FAST_WEIGHTS, load_classifier, load_judge, realism_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=400, help="prompts to score (default 400)")
    parser.add_argument("--out", default="benchmarks/results/realism_speed.json")
    args = parser.parse_args()
    rng = random.Random(0)
    lm = load_model()
    naturals = load_corpus("natural_prompts") + load_corpus("sentences")
    corrupt = list(near_natural_corruptions(lm.tokenizer).values())
    prompts = []
    while len(prompts) < args.n:
        text = rng.choice(naturals)
        prompts.append(text if rng.random() < 0.5 else (rng.choice(corrupt)(text, rng) or text))
    results = {}
    for name, path in (("shipped (with judge)", DEFAULT_WEIGHTS), ("fast (no judge)", FAST_WEIGHTS)):
        if not path.is_file():
            continue
        classifier = load_classifier(path)
        if classifier.uses_judge:
            load_judge()
        realism_scores(lm, prompts[:8], classifier)  # warm-up
        started = time.perf_counter()
        realism_scores(lm, prompts, classifier)
        seconds = time.perf_counter() - started
        results[name] = {"prompts": len(prompts), "seconds": seconds, "prompts_per_minute": 60 * len(prompts) / seconds}
        print(f"{name:<24}{60 * len(prompts) / seconds:>10.0f} prompts/min ({seconds:.1f} s for {len(prompts)})")
    write_json(args.out, {"machine": machine(), "threads": torch.get_num_threads(), "results": results})


if __name__ == "__main__":
    main()
