"""`realize train-realism`: rebuild the realism classifier's weights and print its held-out metrics.

Builds `data.realism_dataset` (deterministic given --seed; naturals split train/validation/test by paraphrase
cluster, corruptions follow their parent's split), extracts features with the embedded model and the judge
(Gemma-3-270M; `--no-judge` leaves it out), fits the classifier on train, calibrates it and picks its threshold on
validation, and evaluates on test:

- per negative kind, the AUC of test naturals vs that kind's negatives for (a) a classifier trained with that kind
  *left out* of train and validation (leave-one-generator-out: the kind is a generator it never saw, so all of its
  rows count), (b) the shipped classifier (all kinds; the kind's test rows), (c) perplexity alone (mean surprisal
  under the embedded model; test rows), (d) the previous classifier (`scorers/weights/realism_v1.json`, feature
  version 1, evaluated on the same test rows);
- the share of test naturals passing the threshold, and of each kind's negatives caught.

Two classifiers are trained on the same rows: the shipped one (`scorers/weights/realism.json`) and a judge-free one
(`scorers/weights/realism_fast.json`, SmolLM2 and text features only). `--reader-labels` takes the reader labels
of the near-natural corruptions (`scorers/weights/realism_reader_labels.jsonl`: each of the 1,784 corruptions of
the seed-0 dataset read and labelled "still natural English" or "broken", blind to scores); corruptions judged
natural then leave the negatives (in training and evaluation) and are reported as a test-only natural source.
With `--train-only-kinds N`, N corruptions of each train-only kind (other single-word edit families,
`data.realism_corruptions.train_only_corruptions`) join the data: always in training, never held out; for a tested
kind with train-only relatives (`FAMILY_OF`), a stricter "family held out" AUC leaves those relatives out too.
Mined search outputs come from
`scorers/weights/realism_mined.jsonl` (hand-labelled; `benchmarks/mine_realism_negatives.py` regenerates the
prompts). Writes the weights atomically; `--report` also writes the metrics as JSON. Same seed and feature cache ->
same weights (recomputed forwards can differ by float noise, e.g. with another thread count).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from realize.commands.common import add_model_argument, build_config
from realize.data.atomic import write_text_atomic
from realize.data.errors import UserInputError
from realize.data.models import load_model
from realize.data.realism_corruptions import FAMILY_OF
from realize.data.realism_dataset import (
    MINED_NATURAL,
    NATURAL_SOURCES,
    READER_NATURAL,
    TEST_ONLY_NATURALS,
    TRAIN_ONLY_KINDS,
    RealismDatasetConfig,
    build_realism_dataset,
    save_dataset_jsonl,
)
from realize.scorers.realism import (
    DEFAULT_WEIGHTS,
    FAST_WEIGHTS,
    JUDGE_MODEL,
    RealismClassifier,
    RealismTrainConfig,
    auc,
    fit_classifier,
    load_classifier,
    load_judge,
    save_classifier,
)
from realize.scorers.realism_features import ALL_FEATURE_NAMES, FEATURE_NAMES, extract_features, select_columns

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(DEFAULT_WEIGHTS).parent
DEFAULT_MINED = WEIGHTS_DIR / "realism_mined.jsonl"
DEFAULT_READER_LABELS = WEIGHTS_DIR / "realism_reader_labels.jsonl"  # near-natural corruptions, read one by one
DEFAULT_FAST = FAST_WEIGHTS  # judge-free classifier: SmolLM2 + text features only
PREVIOUS_WEIGHTS = WEIGHTS_DIR / "realism_v1.json"  # the classifier shipped before feature version 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-realism", help="rebuild the realism classifier and print held-out metrics")
    parser.add_argument("--out", default=str(DEFAULT_WEIGHTS), help=f"weights file (default {DEFAULT_WEIGHTS})")
    parser.add_argument("--seed", type=int, default=0, help="dataset and training seed (default 0)")
    parser.add_argument("--hidden", type=int, default=8, help="MLP hidden width (default 8); 0 = logistic regression")
    parser.add_argument("--mined", default=str(DEFAULT_MINED), help="hand-labelled mined search outputs (JSONL); "
                        "'none' to leave them out")
    parser.add_argument("--reader-labels", default="none", metavar="JSONL",
                        help="reader labels of the near-natural corruptions (the shipped ones: "
                        f"{DEFAULT_READER_LABELS}); corruptions a reader judged still natural English are then not "
                        "negatives in training or evaluation (default none: every corruption is a negative, as the "
                        "shipped weights were trained)")
    parser.add_argument("--train-only-kinds", type=int, default=0, metavar="N",
                        help="add N corruptions of each train-only kind (other single-word edit families, trained "
                        "on, never held out; default 0, as the shipped weights were trained; measured with 300)")
    parser.add_argument("--no-judge", action="store_true", help="leave out the Gemma judge's features")
    parser.add_argument("--fast-out", default=str(DEFAULT_FAST), help="also write the judge-free classifier here "
                        f"(default {DEFAULT_FAST}; 'none' to skip)")
    parser.add_argument("--runs", action="append", default=[], help="`realize optimize` JSON file/folder (test only)")
    parser.add_argument("--no-cache", action="store_true", help="recompute LM features instead of using the cache")
    parser.add_argument("--dry-run", action="store_true", help="print metrics, do not write the weights")
    parser.add_argument("--save-dataset", default=None, metavar="JSONL", help="also write the labelled dataset")
    parser.add_argument("--report", default=None, metavar="JSON", help="also write the metrics as JSON")
    add_model_argument(parser)
    parser.set_defaults(func=_run)


def _auc_vs(scores: torch.Tensor, natural: torch.Tensor, negative: torch.Tensor) -> float:
    keep = natural | negative
    return auc(scores[keep], natural[keep].float())


def _fit(features: torch.Tensor, labels: torch.Tensor, split: list[str], keep: torch.Tensor,
         names: tuple[str, ...], config: RealismTrainConfig) -> RealismClassifier:
    tr = torch.tensor([s == "train" for s in split]) & keep
    va = torch.tensor([s == "validation" for s in split]) & keep
    return fit_classifier(features[tr], labels[tr], names, config, validation=(features[va], labels[va]))


@dataclass(frozen=True)
class Prepared:
    """The labelled dataset with its feature matrix (columns `names`)."""

    texts: list[str]
    labels: torch.Tensor
    split: list[str]
    sources: list[str]
    features: torch.Tensor
    names: tuple[str, ...]
    judge: str | None
    seconds: dict[str, float]


def prepare(lm: Any, dataset_config: RealismDatasetConfig, *, judge: Any = None, use_cache: bool = True,
            save_dataset: str | None = None) -> Prepared:
    """Build the dataset and extract its features (with the judge's block when a judge is given)."""
    started = time.time()
    dataset = build_realism_dataset(lm, dataset_config, use_cache=use_cache)
    if save_dataset:
        save_dataset_jsonl(dataset, save_dataset)
    built = time.time()
    texts = list(dataset["text"])
    features = extract_features(lm, texts, judge=judge, use_cache=use_cache, show_progress=True)
    return Prepared(texts, torch.tensor(dataset["label"], dtype=torch.float32), list(dataset["split"]),
                    list(dataset["source"]), features, ALL_FEATURE_NAMES if judge is not None else FEATURE_NAMES,
                    judge.name if judge is not None else None,
                    {"dataset": built - started, "features": time.time() - built})


def fit_and_evaluate(
    data: Prepared,
    names: tuple[str, ...],
    train_config: RealismTrainConfig,
    *,
    model_name: str,
    seed: int,
    previous: str | Path | None = PREVIOUS_WEIGHTS,
    leave_one_out: bool = True,
) -> tuple[RealismClassifier, dict[str, Any]]:
    """Fit on train with the columns `names` (calibrated on validation), evaluate on test; (classifier with
    metadata, report). See the module docstring for what the report holds."""
    started = time.time()
    features = select_columns(data.features, data.names, names)
    labels, split, sources = data.labels, data.split, data.sources
    test = torch.tensor([s == "test" for s in split])
    is_natural = torch.tensor([s in NATURAL_SOURCES for s in sources])
    trainable = torch.tensor([s not in TEST_ONLY_NATURALS and not s.startswith("optimizer:") for s in sources])
    model = _fit(features, labels, split, trainable, names, train_config)
    probs = model.predict_proba(features)
    ppl_score = -select_columns(data.features, data.names, ["mean_surprisal"])[:, 0]  # perplexity alone
    prev_model = load_classifier(previous, check_version=False) if previous and Path(previous).is_file() else None
    prev_probs = (prev_model.predict_proba(select_columns(data.features, data.names, prev_model.feature_names))
                  if prev_model else None)
    nat_test = is_natural & test
    kinds = sorted({s for s, y in zip(sources, labels.tolist(), strict=True) if y < 0.5})
    present = set(sources)
    per_kind: dict[str, dict[str, float]] = {}
    for kind in kinds:
        neg = torch.tensor([s == kind for s in sources]) & test
        if not bool(neg.any()):
            continue
        row = {"n_test": int(neg.sum()), "auc_shipped": _auc_vs(probs, nat_test, neg),
               "caught_shipped": float((probs[neg] < model.threshold).float().mean()),
               "auc_perplexity": _auc_vs(ppl_score, nat_test, neg)}
        if prev_probs is not None:
            row["auc_previous"] = _auc_vs(prev_probs, nat_test, neg)
            row["caught_previous"] = float((prev_probs[neg] < prev_model.threshold).float().mean())  # type: ignore
        if leave_one_out and not kind.startswith("optimizer:") and kind not in TRAIN_ONLY_KINDS:
            # The kind is left out of train and validation, so every row of it (any split) is unseen: all count.
            every = torch.tensor([s == kind for s in sources])
            held = _fit(features, labels, split, trainable & ~every, names, train_config)
            held_probs = held.predict_proba(features)
            row["n_held_out"] = int(every.sum())
            row["auc_held_out"] = _auc_vs(held_probs, nat_test, every)
            row["caught_held_out"] = float((held_probs[every] < held.threshold).float().mean())
            row["natural_pass_held_out"] = float((held_probs[nat_test] >= held.threshold).float().mean())
            family = {k for k, related in FAMILY_OF.items() if kind in related and k in present}
            if family:  # stricter: the train-only relatives of the kind are left out too
                out = torch.tensor([s in family for s in sources]) | every
                fam = _fit(features, labels, split, trainable & ~out, names, train_config).predict_proba(features)
                row["family_held_out"] = sorted(family)
                row["auc_family_held_out"] = _auc_vs(fam, nat_test, every)
        per_kind[kind] = row
    val_nat = is_natural & torch.tensor([s == "validation" for s in split])
    natural_pass = {src: float((probs[test & torch.tensor([s == src for s in sources])] >= model.threshold)
                               .float().mean()) for src in NATURAL_SOURCES}
    mined_nat = torch.tensor([s == MINED_NATURAL for s in sources])
    reader_nat = torch.tensor([s == READER_NATURAL for s in sources])
    report = {
        "n": {sp: int(sum(s == sp for s in split)) for sp in ("train", "validation", "test")},
        "n_test_naturals": int(nat_test.sum()),
        "threshold": model.threshold,
        "calibration": list(model.calibration),
        "natural_pass_test": float((probs[nat_test] >= model.threshold).float().mean()),
        "natural_pass_validation": float((probs[val_nat] >= model.threshold).float().mean()),
        "natural_pass_by_source": natural_pass,
        "mined_natural_looking_pass": float((probs[mined_nat] >= model.threshold).float().mean())
        if bool(mined_nat.any()) else math.nan,
        "n_reader_natural": int(reader_nat.sum()),
        "reader_natural_pass": float((probs[reader_nat] >= model.threshold).float().mean())
        if bool(reader_nat.any()) else math.nan,
        "auc_test": auc(probs[test & trainable], labels[test & trainable]),
        "previous_threshold": prev_model.threshold if prev_model else math.nan,
        "per_kind": per_kind,
        "judge": data.judge if any(n.startswith("judge_") for n in names) else None,
        "seconds": data.seconds | {"fit": time.time() - started},
    }
    metadata = {
        "model": model_name,
        "seed": seed,
        "hidden": train_config.hidden,
        "l2": train_config.l2,
        "min_natural_pass": train_config.min_natural_pass,
        "dataset": report["n"],
        "metrics": {"auc": report["auc_test"], "natural_pass_test": report["natural_pass_test"],
                    "min_auc_held_out": min((r.get("auc_held_out", math.nan) for r in per_kind.values()),
                                            default=math.nan)},
        "trained_with": "realize train-realism",
    }
    if report["judge"]:
        metadata["judge"] = report["judge"]
    return replace(model, metadata=metadata), report


def train_and_evaluate(
    lm: Any,
    dataset_config: RealismDatasetConfig,
    train_config: RealismTrainConfig,
    use_cache: bool = True,
    save_dataset: str | None = None,
    judge: Any = None,
    previous: str | Path | None = PREVIOUS_WEIGHTS,
    leave_one_out: bool = True,
) -> tuple[RealismClassifier, dict[str, Any]]:
    """`prepare` then `fit_and_evaluate` on every feature computed."""
    data = prepare(lm, dataset_config, judge=judge, use_cache=use_cache, save_dataset=save_dataset)
    return fit_and_evaluate(data, data.names, train_config, model_name=lm.name, seed=dataset_config.seed,
                            previous=previous, leave_one_out=leave_one_out)


def _fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def print_report(report: dict[str, Any]) -> None:
    n = report["n"]
    print(f"splits (by paraphrase cluster): train {n['train']}, validation {n['validation']}, test {n['test']}; "
          f"judge: {report['judge'] or 'none'}")
    print(f"threshold {report['threshold']:.3f} (chosen on validation); test naturals passing: "
          f"{report['natural_pass_test']:.3f} of {report['n_test_naturals']} (validation "
          f"{report['natural_pass_validation']:.3f}); test AUC, all kinds: {_fmt(report['auc_test'])}")
    print("  by source: " + ", ".join(f"{k} {v:.3f}" for k, v in report["natural_pass_by_source"].items()))
    if not math.isnan(report["mined_natural_looking_pass"]):
        print(f"search outputs judged natural by hand, passing: {report['mined_natural_looking_pass']:.3f}")
    if report.get("n_reader_natural"):
        print(f"corruptions a reader judged still natural ({report['n_reader_natural']}, not negatives), passing: "
              f"{report['reader_natural_pass']:.3f}")
    print(f"{'negative kind':<24}{'n held-out':>11}{'AUC held-out':>13}{'family out':>11}{'n test':>7}{'shipped':>9}"
          f"{'ppl only':>10}{'previous':>10}{'caught':>8}")
    for kind, r in report["per_kind"].items():
        print(f"{kind:<24}{r.get('n_held_out', 0):>11}{_fmt(r.get('auc_held_out')):>13}"
              f"{_fmt(r.get('auc_family_held_out')):>11}{r['n_test']:>7}"
              f"{_fmt(r['auc_shipped']):>9}{_fmt(r['auc_perplexity']):>10}{_fmt(r.get('auc_previous')):>10}"
              f"{_fmt(r['caught_shipped']):>8}")
    s = report["seconds"]
    print(f"time: dataset {s['dataset']:.0f}s, features {s['features']:.0f}s, fit {s['fit']:.1f}s")


def _run(args: argparse.Namespace) -> int:
    if args.train_only_kinds < 0:  # checked before the (slow) model load
        raise UserInputError(f"--train-only-kinds: expected a count >= 0, got {args.train_only_kinds}")
    lm = load_model(args.model)
    judge = None if args.no_judge else load_judge(JUDGE_MODEL)
    mined = None if args.mined.lower() == "none" else args.mined
    reader = None if args.reader_labels.lower() == "none" else args.reader_labels
    dataset_config = build_config(RealismDatasetConfig, {"seed": args.seed, "optimizer_runs": tuple(args.runs),
                                                         "mined_path": mined, "reader_labels_path": reader,
                                                         "n_per_train_only": args.train_only_kinds})
    train_config = build_config(RealismTrainConfig, {"seed": args.seed, "hidden": args.hidden})
    data = prepare(lm, dataset_config, judge=judge, use_cache=not args.no_cache, save_dataset=args.save_dataset)
    outputs = [(data.names, args.out)]
    if judge is not None and args.fast_out.lower() != "none":
        outputs.append((FEATURE_NAMES, args.fast_out))  # the judge-free classifier, trained alongside
    reports = {}
    for names, out in outputs:
        model, report = fit_and_evaluate(data, names, train_config, model_name=lm.name, seed=args.seed)
        title = "with the judge" if report["judge"] else "without a judge"
        print(f"== classifier {title} ({len(names)} features) -> {out}")
        print_report(report)
        reports[title] = report
        if not args.dry_run:
            save_classifier(model, out)
            print(f"wrote {out}")
    if args.report:
        write_text_atomic(args.report, json.dumps(reports, indent=1) + "\n")
    return 0
