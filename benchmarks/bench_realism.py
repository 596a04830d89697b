"""Realism scoring throughput and memory: prompts per minute of `realism_scores` with the given weights files
(default: the shipped classifier, SmolLM2 features + the Gemma judge, and the judge-free one), on a mix of natural
prompts and their corruptions (features recomputed, no cache; models loaded before timing), and the process's peak
resident memory after each.

    OMP_NUM_THREADS=1 python benchmarks/bench_realism.py --n 400
    OMP_NUM_THREADS=1 python benchmarks/bench_realism.py --weights old.json     # one file per process: clean peaks
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from _setup import machine, write_json
from realize.data.corpora import load_corpus
from realize.data.models import load_model
from realize.scorers.realism import DEFAULT_WEIGHTS, FAST_WEIGHTS, load_classifier, load_judge, realism_scores
from realize.scorers.realism.corruptions import near_natural_corruptions


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (VmHWM), GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=400, help="prompts to score (default 400)")
    parser.add_argument("--weights", nargs="+", default=[str(DEFAULT_WEIGHTS), str(FAST_WEIGHTS)])
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
    for path in map(Path, args.weights):
        classifier = load_classifier(path)
        if classifier.uses_judge:
            load_judge()
        realism_scores(lm, prompts[:8], classifier)  # warm-up
        started = time.perf_counter()
        realism_scores(lm, prompts, classifier)
        seconds = time.perf_counter() - started
        results[str(path)] = {"prompts": len(prompts), "seconds": seconds, "judge": classifier.uses_judge,
                              "tail": classifier.uses_tail, "n_features": len(classifier.feature_names),
                              "prompts_per_minute": 60 * len(prompts) / seconds, "peak_rss_gib": peak_rss_gib()}
        print(f"{path.name:<28}{60 * len(prompts) / seconds:>8.0f} prompts/min ({seconds:.1f} s for {len(prompts)}); "
              f"peak RSS {peak_rss_gib():.2f} GiB", flush=True)
    write_json(args.out, {"machine": machine(), "threads": torch.get_num_threads(), "results": results})


if __name__ == "__main__":
    main()
