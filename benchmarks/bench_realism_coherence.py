"""Three candidate changes to the realism judge, each measured on the families it never saw (issue 25):

    OMP_NUM_THREADS=2 python benchmarks/bench_realism_coherence.py   # ~5 min with the token-statistics cache warm
                                                                     # (~80 min cold: the families bench's forwards)

- **sentence coherence** (`_coherence.py`, a prototype outside the package): each later sentence's PMI with the
  sentences before it, added to every v3 + judge feature;
- **a 5-initialization ensemble**: the mean P(natural) of the five MLPs the families bench already fits;
- **reader labels** (`scorers/weights/realism_reader_labels.jsonl`): corruptions a reader judged still natural English
  leave the negatives (test-only naturals, never trained on), as `realize train-realism --reader-labels` does.

The dataset and splits are the families bench's (`bench_realism_families.py`, seed 0, 300 rows per train-only kind);
each kind is held out of train and validation in turn and scored against the test naturals (corpus + benign), for
MLP seeds 0-4. Writes `benchmarks/results/realism_coherence.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from _coherence import COHERENCE_FEATURES, coherence_rows
from _setup import machine, write_json
from bench_realism_families import WEIGHTS, _trainable
from realize.data.models import load_model
from realize.scorers.realism.dataset import BENIGN_SOURCE, NATURAL_KINDS, NEAR_NATURAL_SOURCES, RealismDatasetConfig
from realize.scorers.realism.evaluate import _auc_vs, _mask, fit_split
from realize.scorers.realism.features import ALL_FEATURE_NAMES, select_columns
from realize.scorers.realism.labels import apply_reader_labels, read_reader_labels
from realize.scorers.realism.model import JUDGE_MODEL, load_judge
from realize.scorers.realism.stats import text_stats
from realize.scorers.realism.train import Prepared, RealismTrainConfig, prepare

KINDS = ("gen_autodan", "gen_natural", "gen_flrt", "gen_beast", "gen_fluent", "function_drop", "function_dup",
         "word_merge", "word_swap_common", "mined_fluent")
SEEDS = (0, 1, 2, 3, 4)
READER_LABELS = WEIGHTS / "realism_reader_labels.jsonl"


def with_reader_labels(data: Prepared) -> Prepared:
    """Near-natural corruptions a reader judged still natural become test-only naturals (`apply_reader_labels`, the
    dataset builder's own step, applied to the prepared rows: the features stay the same)."""
    rows = apply_reader_labels(data.rows, read_reader_labels(READER_LABELS), NEAR_NATURAL_SOURCES)
    return dataclasses.replace(data, labels=torch.tensor([float(r["label"]) for r in rows]),
                               split=[str(r["split"]) for r in rows], sources=[str(r["source"]) for r in rows],
                               rows=rows)


def held_out(data: Prepared, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Per kind: held-out AUC per MLP seed (mean, min, max), of the seeds' mean P(natural) (`ensemble`), vs the benign
    test prompts only, and the share of the kind's rows passing each seed's threshold (mean)."""
    features = select_columns(data.features, data.names, names)
    test = _mask(data.split, ("test",))
    natural, benign = _mask(data.sources, NATURAL_KINDS) & test, _mask(data.sources, (BENIGN_SOURCE,)) & test
    out = {}
    for kind in KINDS:
        every = _mask(data.sources, (kind,))
        probs, aucs, passes = [], [], []
        for seed in SEEDS:
            model = fit_split(data, features, _trainable(data) & ~every, names, RealismTrainConfig(seed=seed))
            p = model.predict_proba(features)
            probs.append(p)
            aucs.append(_auc_vs(p, natural, every))
            passes.append(float((p[every] >= model.threshold).float().mean()))
        out[kind] = {"mean": statistics.mean(aucs), "min": min(aucs), "max": max(aucs),
                     "ensemble": _auc_vs(torch.stack(probs).mean(0), natural, every),
                     "vs_benign": statistics.mean(_auc_vs(p, benign, every) for p in probs),
                     "pass": statistics.mean(passes), "n": int(every.sum())}
    return out


def separation(data: Prepared) -> dict[str, dict[str, float]]:
    """Each coherence feature alone: AUC of the test naturals vs a family, over all rows and over multi-sentence rows
    only (larger = the feature is larger for naturals)."""
    test = _mask(data.split, ("test",))
    natural = _mask(data.sources, NATURAL_KINDS) & test
    multi = select_columns(data.features, data.names, ["sent_count"])[:, 0] > 0.7  # log(1 + 2): two sentences or more
    out = {}
    for name in COHERENCE_FEATURES:
        x = select_columns(data.features, data.names, [name])[:, 0]
        for kind in ("gen_autodan", "gen_flrt", "gen_natural"):
            rows = _mask(data.sources, (kind,))
            out.setdefault(name, {})[kind] = _auc_vs(x, natural, rows)
            out[name][kind + " (multi-sentence)"] = _auc_vs(x, natural & multi, rows & multi)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/realism_coherence.json")
    args = parser.parse_args()
    started = time.time()
    lm = load_model()
    data = prepare(lm, RealismDatasetConfig(seed=0, mined_path=str(WEIGHTS / "realism_mined.jsonl"),
                                            n_per_train_only=300), judge=load_judge(JUDGE_MODEL))
    stats = text_stats(lm, data.texts, use_cache=True)
    coherence = torch.tensor(coherence_rows(lm, data.texts, stats, use_cache=True), dtype=torch.float32)
    data = dataclasses.replace(data, features=torch.cat([data.features, coherence], dim=1),
                               names=tuple(data.names) + COHERENCE_FEATURES)
    results: dict[str, object] = {"machine": machine(), "n_rows": len(data.texts), "seeds": list(SEEDS),
                                  "separation": separation(data)}
    for label, variant, names in (("v3+judge", data, ALL_FEATURE_NAMES),
                                  ("v3+judge+coherence", data, ALL_FEATURE_NAMES + COHERENCE_FEATURES),
                                  ("v3+judge, reader labels", with_reader_labels(data), ALL_FEATURE_NAMES)):
        results[label] = held_out(variant, names)
        print(f"== {label}")
        for kind, row in results[label].items():  # type: ignore[union-attr]
            print(f"  {kind:<18}" + "  ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "n"), flush=True)
    results["seconds"] = time.time() - started
    write_json(args.out, results)


if __name__ == "__main__":
    main()
