"""`realize train-realism`: rebuild the realism classifier's weights and print its held-out metrics.

Builds `data.realism_dataset` (deterministic given --seed), extracts features with the embedded model (cached
under the realize cache), fits the classifier on the train split, and evaluates on the test split, which holds
sources never seen in training (`lm_sample_t1.5`, `token_swap`, and optimizer runs given with --runs). Prints
AUC overall, accuracy at the chosen threshold, the perplexity+length baseline (Alon & Kamfonas 2023), the hard
slice (fluent-but-odd negatives vs natural test prompts) and per-source detection rates; writes the weights
atomically.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import replace
from typing import Any

import torch

from realize.data.models import load_model
from realize.data.realism_dataset import (
    HARD_SOURCES,
    HELD_OUT_SOURCES,
    RealismDatasetConfig,
    build_realism_dataset,
    save_dataset_jsonl,
)
from realize.commands.common import add_model_argument, build_config
from realize.scorers.realism import (
    BASELINE_FEATURES,
    DEFAULT_WEIGHTS,
    RealismClassifier,
    RealismTrainConfig,
    auc,
    fit_classifier,
    save_classifier,
)
from realize.scorers.realism_features import FEATURE_NAMES, extract_features

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-realism", help="rebuild the realism classifier and print held-out metrics")
    parser.add_argument("--out", default=str(DEFAULT_WEIGHTS), help=f"weights file (default {DEFAULT_WEIGHTS})")
    parser.add_argument("--seed", type=int, default=0, help="dataset and training seed (default 0)")
    parser.add_argument("--hidden", type=int, default=8, help="MLP hidden width (default 8); 0 = logistic regression")
    parser.add_argument("--runs", action="append", default=[], help="`realize optimize` JSON file/folder (test only)")
    parser.add_argument("--no-cache", action="store_true", help="recompute LM features instead of using the cache")
    parser.add_argument("--dry-run", action="store_true", help="print metrics, do not write the weights")
    parser.add_argument("--save-dataset", default=None, metavar="JSONL", help="also write the labelled dataset")
    add_model_argument(parser)
    parser.set_defaults(func=_run)


def evaluate(
    model: RealismClassifier, features: torch.Tensor, labels: torch.Tensor, sources: list[str]
) -> dict[str, Any]:
    """AUC, accuracy at the model's threshold, hard-slice AUC and per-source rates on one split."""
    probs = model.predict_proba(features)
    pred = probs >= model.threshold
    natural = labels > 0.5
    hard = torch.tensor([s in HARD_SOURCES for s in sources])
    per_source: dict[str, float] = {}
    for source in sorted(set(sources)):
        rows = torch.tensor([s == source for s in sources])
        correct = pred[rows] == natural[rows]
        per_source[source] = float(correct.float().mean())
    return {
        "auc": auc(probs, labels),
        "accuracy": float((pred == natural).float().mean()),
        "balanced_accuracy": 0.5 * float(pred[natural].float().mean() + (~pred[~natural]).float().mean()),
        "hard_auc": auc(probs[natural | hard], labels[natural | hard]),
        "per_source_accuracy": per_source,
    }


def train_and_evaluate(
    lm: Any,
    dataset_config: RealismDatasetConfig,
    train_config: RealismTrainConfig,
    use_cache: bool = True,
    save_dataset: str | None = None,
) -> tuple[RealismClassifier, dict[str, Any]]:
    """Build the dataset, extract features, fit on train, evaluate on test; (classifier with metadata, report)."""
    started = time.time()
    dataset = build_realism_dataset(lm, dataset_config)
    if save_dataset:
        save_dataset_jsonl(dataset, save_dataset)
    built = time.time()
    texts, labels = list(dataset["text"]), torch.tensor(dataset["label"], dtype=torch.float32)
    features = extract_features(lm, texts, use_cache=use_cache, show_progress=True)
    extracted = time.time()
    split = dataset["split"]
    tr = torch.tensor([s == "train" for s in split])
    te = ~tr
    sources = list(dataset["source"])
    test_sources = [s for s, t in zip(sources, te.tolist(), strict=True) if t]
    model = fit_classifier(features[tr], labels[tr], FEATURE_NAMES, train_config)
    cols = [FEATURE_NAMES.index(n) for n in BASELINE_FEATURES]
    baseline = fit_classifier(features[tr][:, cols], labels[tr], BASELINE_FEATURES, replace(train_config, hidden=0))
    ours = evaluate(model, features[te], labels[te], test_sources)
    base = evaluate(baseline, features[te][:, cols], labels[te], test_sources)
    raw_ppl = -features[te][:, FEATURE_NAMES.index("mean_surprisal")]  # perplexity threshold alone
    report = {
        "test": ours,
        "baseline_perplexity_length": base,
        "perplexity_only_auc": auc(raw_ppl, labels[te]),
        "train_auc": auc(model.predict_proba(features[tr]), labels[tr]),
        "n_train": int(tr.sum()),
        "n_test": int(te.sum()),
        "held_out_sources": list(HELD_OUT_SOURCES) + sorted({s for s in sources if s.startswith("optimizer:")}),
        "hard_sources": list(HARD_SOURCES),
        "seconds": {"dataset": built - started, "features": extracted - built, "fit": time.time() - extracted},
    }
    metadata = {
        "model": lm.name,
        "seed": dataset_config.seed,
        "hidden": train_config.hidden,
        "l2": train_config.l2,
        "dataset": {"n_train": report["n_train"], "n_test": report["n_test"], "held_out": report["held_out_sources"]},
        "metrics": {k: ours[k] for k in ("auc", "accuracy", "hard_auc")}
        | {"baseline_auc": base["auc"], "baseline_hard_auc": base["hard_auc"]},
        "trained_with": "realize train-realism",
    }
    return replace(model, metadata=metadata), report


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.3f}"


def print_report(report: dict[str, Any]) -> None:
    ours, base = report["test"], report["baseline_perplexity_length"]
    print(f"held-out test: {report['n_test']} prompts (train {report['n_train']}); "
          f"sources never trained on: {', '.join(report['held_out_sources'])}")
    print(f"{'metric':<34}{'classifier':>12}{'ppl+length':>12}")
    print(f"{'AUC (overall)':<34}{_fmt(ours['auc']):>12}{_fmt(base['auc']):>12}")
    print(f"{'hard-slice AUC':<34}{_fmt(ours['hard_auc']):>12}{_fmt(base['hard_auc']):>12}")
    print(f"{'accuracy at threshold':<34}{_fmt(ours['accuracy']):>12}{_fmt(base['accuracy']):>12}")
    print(f"{'balanced accuracy':<34}{_fmt(ours['balanced_accuracy']):>12}{_fmt(base['balanced_accuracy']):>12}")
    print(f"perplexity-only AUC (threshold on mean surprisal): {_fmt(report['perplexity_only_auc'])}")
    print("per-source accuracy (test):")
    for source, acc in ours["per_source_accuracy"].items():
        print(f"  {source:<28}{_fmt(acc):>8}{_fmt(base['per_source_accuracy'][source]):>12}")
    s = report["seconds"]
    print(f"time: dataset {s['dataset']:.0f}s, features {s['features']:.0f}s, fit {s['fit']:.1f}s")


def _run(args: argparse.Namespace) -> int:
    lm = load_model(args.model)
    dataset_config = build_config(RealismDatasetConfig, {"seed": args.seed, "optimizer_runs": tuple(args.runs)})
    train_config = build_config(RealismTrainConfig, {"seed": args.seed, "hidden": args.hidden})
    model, report = train_and_evaluate(
        lm, dataset_config, train_config, use_cache=not args.no_cache, save_dataset=args.save_dataset
    )
    print_report(report)
    if not args.dry_run:
        save_classifier(model, args.out)
        print(f"wrote {args.out}")
    return 0
