"""Evaluating the realism classifier: AUC, leave-one-generator-out per negative kind, the generator families held
out, the benign prompts passing, the "unverified" band, and the report.

Every number comes from rows that chose nothing: the classifier is fit on train, calibrated and thresholded on
validation, and scored on test naturals (the corpora and the benign task prompts, split by cluster). For a tested
negative kind, "held out" means a classifier retrained with that kind removed from train *and* validation, so all
of the kind's rows are from a generator it never saw and all count. Per kind:

- `auc_held_out`: held-out kind vs the test naturals (corpora + benign); `auc_held_out_benign`: vs the test benign
  prompts only; `auc_held_out_corpus`: vs the test corpus naturals only (short prompts, as measured before the
  benign prompts existed); `auc_held_out_matched`: perplexity-matched, pairs compared only within the same bin of SmolLM2 mean
  surprisal (8 bins at the kind's quantiles), so perplexity alone scores 0.5 there by construction;
- `caught_held_out`: share of the kind below the held-out classifier's threshold; `unverified_held_out`: in its band;
- `auc_shipped`: the classifier trained on every kind (the kind's test rows); `auc_perplexity`: mean surprisal alone;
  `auc_previous`: a previous weights file scored on the same rows (columns selected by name);
- for a kind with train-only relatives (`corruptions.FAMILY_OF`): `auc_family_held_out`, those left out too.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from realize.scorers.realism.corruptions import FAMILY_OF
from realize.scorers.realism.dataset import (
    BENIGN_SOURCE,
    FAMILY_SOURCES,
    MINED_NATURAL,
    NATURAL_KINDS,
    READER_NATURAL,
    TEST_ONLY_NATURALS,
    TRAIN_ONLY_KINDS,
    RealismDatasetConfig,
)
from realize.scorers.realism.features import select_columns
from realize.scorers.realism.model import JUDGE_MODEL, RealismClassifier, load_classifier
from realize.scorers.realism.train import Prepared, RealismTrainConfig, fit_classifier, prepare

MATCH_BINS = 8


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC (probability a random positive outscores a random negative, ties count half); nan if one class."""
    s, y = scores.double(), labels > 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    sorted_s = s[order]
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    for value in torch.unique(sorted_s[1:][sorted_s[1:] == sorted_s[:-1]]).tolist():  # average tied ranks
        tied = s == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def matched_auc(scores: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, match: torch.Tensor,
                bins: int = MATCH_BINS) -> float:
    """AUC over (positive, negative) pairs in the same bin of `match` (bins at the negatives' quantiles): what a
    score adds at equal perplexity. nan when no bin holds both classes."""
    edges = torch.quantile(match[negative].double(), torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:-1])
    which = torch.bucketize(match.double(), edges)
    wins, pairs = 0.0, 0
    for b in range(bins):
        pos, neg = scores[positive & (which == b)].double(), scores[negative & (which == b)].double()
        if pos.numel() and neg.numel():
            diff = pos[:, None] - neg[None, :]
            wins += float((diff > 0).sum()) + 0.5 * float((diff == 0).sum())
            pairs += pos.numel() * neg.numel()
    return wins / pairs if pairs else math.nan


def _auc_vs(scores: torch.Tensor, natural: torch.Tensor, negative: torch.Tensor) -> float:
    keep = natural | negative
    return auc(scores[keep], natural[keep].float())


def _mask(values: list[str], wanted: set[str] | tuple[str, ...]) -> torch.Tensor:
    return torch.tensor([v in wanted for v in values])


def fit_split(data: Prepared, features: torch.Tensor, keep: torch.Tensor, names: tuple[str, ...],
              config: RealismTrainConfig) -> RealismClassifier:
    """Fit on train rows in `keep`, calibrate and threshold on validation rows in `keep`."""
    tr = _mask(data.split, ("train",)) & keep
    va = _mask(data.split, ("validation",)) & keep
    return fit_classifier(features[tr], data.labels[tr], names, config,
                          validation=(features[va], data.labels[va]))


def _share(x: torch.Tensor) -> float:
    return float(x.float().mean()) if x.numel() else math.nan


def fit_and_evaluate(
    data: Prepared,
    names: tuple[str, ...],
    train_config: RealismTrainConfig,
    *,
    model_name: str,
    seed: int,
    previous: str | Path | None = None,
    leave_one_out: bool = True,
) -> tuple[RealismClassifier, dict[str, Any]]:
    """Fit on train with the columns `names` (calibrated on validation), evaluate on test; (classifier with
    metadata, report). See the module docstring for what the report holds."""
    started = time.time()
    features = select_columns(data.features, data.names, names)
    sources, split = data.sources, data.split
    test = _mask(split, ("test",))
    trainable = torch.tensor([s not in TEST_ONLY_NATURALS and not s.startswith("optimizer:") for s in sources])
    model = fit_split(data, features, trainable, names, train_config)
    probs = model.predict_proba(features)
    surprisal = select_columns(data.features, data.names, ["mean_surprisal"])[:, 0]
    prev_model = load_classifier(previous, check_version=False) if previous and Path(previous).is_file() else None
    prev_probs = (prev_model.predict_proba(select_columns(data.features, data.names, prev_model.feature_names))
                  if prev_model else None)
    nat_test = _mask(sources, NATURAL_KINDS) & test
    benign_test = _mask(sources, (BENIGN_SOURCE,)) & test
    kinds = sorted({s for s, y in zip(sources, data.labels.tolist(), strict=True) if y < 0.5})
    present = set(sources)
    per_kind: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        neg = _mask(sources, (kind,)) & test
        if not bool(neg.any()):
            continue
        row: dict[str, Any] = {"n_test": int(neg.sum()), "auc_shipped": _auc_vs(probs, nat_test, neg),
                               "caught_shipped": _share(probs[neg] < model.threshold),
                               "auc_perplexity": _auc_vs(-surprisal, nat_test, neg)}
        if prev_probs is not None and prev_model is not None:
            row["auc_previous"] = _auc_vs(prev_probs, nat_test, neg)
            row["caught_previous"] = _share(prev_probs[neg] < prev_model.threshold)
        if leave_one_out and not kind.startswith("optimizer:") and kind not in TRAIN_ONLY_KINDS:
            every = _mask(sources, (kind,))  # left out of train and validation: every row is unseen
            held = fit_split(data, features, trainable & ~every, names, train_config)
            p = held.predict_proba(features)
            lower, _ = held.band
            row.update({
                "n_held_out": int(every.sum()), "auc_held_out": _auc_vs(p, nat_test, every),
                "auc_held_out_benign": _auc_vs(p, benign_test, every),
                "auc_held_out_corpus": _auc_vs(p, nat_test & ~benign_test, every),
                "auc_held_out_matched": matched_auc(p, nat_test, every, surprisal),
                "auc_perplexity_all": _auc_vs(-surprisal, nat_test, every),
                "caught_held_out": _share(p[every] < held.threshold),
                "unverified_held_out": _share((p[every] >= lower) & (p[every] < held.threshold)),
                "natural_pass_held_out": _share(p[nat_test] >= held.threshold),
                "benign_pass_held_out": _share(p[benign_test] >= held.threshold),
            })
            family = {k for k, related in FAMILY_OF.items() if kind in related and k in present}
            if family:  # stricter: the train-only relatives of the kind are left out too
                out = _mask(sources, family) | every
                fam = fit_split(data, features, trainable & ~out, names, train_config).predict_proba(features)
                row["family_held_out"] = sorted(family)
                row["auc_family_held_out"] = _auc_vs(fam, nat_test, every)
        per_kind[kind] = row
    families_out = None
    if leave_one_out and any(k in present for k in FAMILY_SOURCES):  # every generator family out at once
        every = _mask(sources, FAMILY_SOURCES)
        p = fit_split(data, features, trainable & ~every, names, train_config).predict_proba(features)
        families_out = {k: _auc_vs(p, nat_test, _mask(sources, (k,))) for k in FAMILY_SOURCES if k in present}
    lower, _ = model.band
    val_nat = _mask(sources, NATURAL_KINDS) & _mask(split, ("validation",))
    mined_nat, reader_nat = _mask(sources, (MINED_NATURAL,)), _mask(sources, (READER_NATURAL,))
    report = {
        "n": {sp: int(sum(s == sp for s in split)) for sp in ("train", "validation", "test")},
        "n_test_naturals": int(nat_test.sum()),
        "n_test_benign": int(benign_test.sum()),
        "threshold": model.threshold,
        "unnatural_below": lower,
        "calibration": list(model.calibration),
        "natural_pass_test": _share(probs[nat_test] >= model.threshold),
        "natural_unverified_test": _share((probs[nat_test] >= lower) & (probs[nat_test] < model.threshold)),
        "natural_pass_validation": _share(probs[val_nat] >= model.threshold),
        "benign_pass_test": _share(probs[benign_test] >= model.threshold),
        "natural_pass_by_source": {src: _share(probs[test & _mask(sources, (src,))] >= model.threshold)
                                   for src in NATURAL_KINDS if src in present},
        "mined_natural_looking_pass": _share(probs[mined_nat] >= model.threshold),
        "n_reader_natural": int(reader_nat.sum()),
        "reader_natural_pass": _share(probs[reader_nat] >= model.threshold),
        "auc_test": auc(probs[test & trainable], data.labels[test & trainable]),
        "previous_threshold": prev_model.threshold if prev_model else math.nan,
        "per_kind": per_kind,
        "families_all_held_out": families_out,
        "judge": data.judge if any(n.startswith(("judge_", "agree_")) for n in names) else None,
        "features": list(names),
        "seconds": data.seconds | {"fit": time.time() - started},
    }
    metadata = {
        "model": model_name, "seed": seed, "hidden": train_config.hidden, "l2": train_config.l2,
        "min_natural_pass": train_config.min_natural_pass, "max_natural_reject": train_config.max_natural_reject,
        "dataset": report["n"],
        "metrics": {"auc": report["auc_test"], "natural_pass_test": report["natural_pass_test"],
                    "benign_pass_test": report["benign_pass_test"],
                    "min_auc_held_out": min((r.get("auc_held_out", math.nan) for r in per_kind.values()),
                                            default=math.nan)},
        "trained_with": "realize train-realism",
    }
    if report["judge"]:
        metadata["judge"] = JUDGE_MODEL  # the name `model.load_judge` takes (the loaded model may call itself otherwise)
    return replace(model, metadata=metadata), report


def _fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def print_report(report: dict[str, Any]) -> None:
    n = report["n"]
    print(f"splits (by paraphrase cluster): train {n['train']}, validation {n['validation']}, test {n['test']}; "
          f"judge: {report['judge'] or 'none'}; {len(report['features'])} features")
    print(f"threshold {report['threshold']:.3f}, band [{report['unnatural_below']:.3f}, {report['threshold']:.3f}) "
          f"unverified (chosen on validation); test naturals passing: {report['natural_pass_test']:.3f} of "
          f"{report['n_test_naturals']} (validation {report['natural_pass_validation']:.3f}; in the band "
          f"{report['natural_unverified_test']:.3f}); benign task prompts passing: {_fmt(report['benign_pass_test'])} "
          f"of {report['n_test_benign']}; test AUC, all kinds: {_fmt(report['auc_test'])}")
    print("  by source: " + ", ".join(f"{k} {v:.3f}" for k, v in report["natural_pass_by_source"].items()))
    if not math.isnan(report["mined_natural_looking_pass"]):
        print(f"search outputs judged natural by hand, passing: {report['mined_natural_looking_pass']:.3f}")
    if report.get("n_reader_natural"):
        print(f"corruptions a reader judged still natural ({report['n_reader_natural']}, not negatives), passing: "
              f"{report['reader_natural_pass']:.3f}")
    print(f"{'negative kind':<22}{'n out':>6}{'AUC out':>8}{'benign':>7}{'corpus':>7}{'matched':>8}{'family':>7}{'n test':>7}"
          f"{'shipped':>8}{'ppl':>7}{'prev':>7}{'caught':>7}{'unver.':>7}")
    for kind, r in report["per_kind"].items():
        print(f"{kind:<22}{r.get('n_held_out', 0):>6}{_fmt(r.get('auc_held_out')):>8}"
              f"{_fmt(r.get('auc_held_out_benign')):>7}{_fmt(r.get('auc_held_out_corpus')):>7}"
              f"{_fmt(r.get('auc_held_out_matched')):>8}"
              f"{_fmt(r.get('auc_family_held_out')):>7}{r['n_test']:>7}{_fmt(r['auc_shipped']):>8}"
              f"{_fmt(r.get('auc_perplexity_all', r['auc_perplexity'])):>7}{_fmt(r.get('auc_previous')):>7}"
              f"{_fmt(r.get('caught_held_out', r['caught_shipped'])):>7}{_fmt(r.get('unverified_held_out')):>7}")
    if report.get("families_all_held_out"):
        print("every generator family held out at once: " + ", ".join(
            f"{k} {_fmt(v)}" for k, v in report["families_all_held_out"].items()))
    s = report["seconds"]
    print(f"time: dataset {s['dataset']:.0f}s, features {s['features']:.0f}s, fit {s['fit']:.1f}s")


def train_and_evaluate(
    lm: Any,
    dataset_config: RealismDatasetConfig,
    train_config: RealismTrainConfig,
    use_cache: bool = True,
    save_dataset: str | None = None,
    judge: Any = None,
    previous: str | Path | None = None,
    leave_one_out: bool = True,
) -> tuple[RealismClassifier, dict[str, Any]]:
    """`train.prepare` then `fit_and_evaluate` on every feature computed."""
    data = prepare(lm, dataset_config, judge=judge, use_cache=use_cache, save_dataset=save_dataset)
    return fit_and_evaluate(data, data.names, train_config, model_name=lm.name, seed=dataset_config.seed,
                            previous=previous, leave_one_out=leave_one_out)
