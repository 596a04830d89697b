"""The realism judge on fluent adversarial generator families it never saw, and on benign task prompts: the README's
per-family table (issue 25).

    OMP_NUM_THREADS=1 python benchmarks/bench_realism_families.py     # ~1 h with a cold token-statistics cache

One dataset (`realize.scorers.realism.dataset`, seed 0: corpora + benign task prompts split by cluster, corruptions,
mined search outputs, the five generator families of `scorers/realism/negatives/`), one feature matrix, and
classifiers that differ only in their feature set, each evaluated leave-one-generator-out (`realism.evaluate`):

- `v3+judge`: every feature (turn features, the Gemma judge, two-LM agreement): the new shipped candidate;
- `v2+judge`: the 72 features of the shipped weights, retrained on the same rows ("without the new features");
- `v3`, `v2`: the same without the judge;
- `v3+judge-tail`, `v3+judge-agree`: ablations (no tail read alone: one forward fewer; no two-LM agreement);
- `shipped`: the weights shipped before this change (`scorers/weights/realism.json`, never saw a family or a benign
  prompt), scored as they are.

Benign prompts passing are also measured 4-fold cross-validated by benign cluster (each fold's clusters out of
train and validation), so that every benign prompt is scored by a classifier that never saw its template. For the
suffix rows (an optimized suffix after a natural instruction), where the judge sees the turn: the SmolLM2 change
point and the interior end, in tokens from the true suffix boundary, and P(natural) of the instruction alone vs with
its suffix under the classifier that never saw the family. Writes `benchmarks/results/realism_families.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import torch

from _setup import machine, write_json
from realize.data.models import load_model
from realize.scorers.realism.dataset import (
    BENIGN_SOURCE,
    FAMILY_SOURCES,
    NATURAL_KINDS,
    TEST_ONLY_NATURALS,
    RealismDatasetConfig,
)
from realize.scorers.realism.evaluate import _auc_vs, fit_and_evaluate, fit_split, print_report
from realize.scorers.realism.features import (
    AGREE_FEATURES,
    ALL_FEATURE_NAMES,
    TAIL_FEATURES,
    FEATURE_NAMES,
    V2_ALL_FEATURE_NAMES,
    V2_FEATURE_NAMES,
    select_columns,
)
from realize.scorers.realism.model import DEFAULT_WEIGHTS, JUDGE_MODEL, load_classifier, load_judge
from realize.scorers.realism.sources import read_family_negatives
from realize.scorers.realism.stats import text_stats
from realize.scorers.realism.train import RealismTrainConfig, prepare
from realize.scorers.realism.lm_features import token_char_spans
from realize.scorers.realism.turns import change_point, interior_end

WEIGHTS = Path("scorers/weights")
READER_LABELS = Path("scorers/realism/negatives/reader_labels.jsonl")
FEATURE_SETS = {"v3+judge": ALL_FEATURE_NAMES, "v2+judge": V2_ALL_FEATURE_NAMES, "v3": FEATURE_NAMES,
                "v2": V2_FEATURE_NAMES,
                "v3+judge-tail": tuple(n for n in ALL_FEATURE_NAMES if n not in TAIL_FEATURES),
                "v3+judge-agree": tuple(n for n in ALL_FEATURE_NAMES if n not in AGREE_FEATURES)}
FOLDS = 4


def _trainable(data) -> torch.Tensor:
    return torch.tensor([s not in TEST_ONLY_NATURALS and not s.startswith("optimizer:") for s in data.sources])


def benign_cv(data, names, config) -> dict[str, float]:
    """Share of benign prompts passing, each scored by a classifier fit without its cluster's fold."""
    features = select_columns(data.features, data.names, names)
    clusters = sorted({str(r["cluster"]) for r in data.rows if r["source"] == BENIGN_SOURCE})
    fold_of = {c: i % FOLDS for i, c in enumerate(clusters)}
    trainable = _trainable(data)
    passed, unverified, n = 0, 0, 0
    for k in range(FOLDS):
        out = torch.tensor([r["source"] == BENIGN_SOURCE and fold_of[str(r["cluster"])] == k for r in data.rows])
        model = fit_split(data, features, trainable & ~out, names, config)
        p = model.predict_proba(features[out])
        lower, _ = model.band
        passed += int((p >= model.threshold).sum())
        unverified += int(((p >= lower) & (p < model.threshold)).sum())
        n += int(out.sum())
    return {"n": n, "pass": passed / n, "unverified": unverified / n}


def reader_checked(data, names, config) -> dict[str, float]:
    """Held-out AUC of a family with the rows a reader judged natural-looking left out of its negatives (they stay
    out of evaluation only; `scorers/realism/negatives/reader_labels.jsonl`)."""
    labels = {}
    if READER_LABELS.is_file():
        for line in READER_LABELS.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            labels[row["text"]] = int(row["label"])
    features = select_columns(data.features, data.names, names)
    test = torch.tensor([s == "test" for s in data.split])
    nat = torch.tensor([s in NATURAL_KINDS for s in data.sources]) & test
    out = {}
    for family in sorted({r["family"] for r in read_family_negatives()}):
        kind = f"gen_{family}"
        every = torch.tensor([s == kind for s in data.sources])
        checked = torch.tensor([s == kind and labels.get(t) == 0 for s, t in zip(data.sources, data.texts,
                                                                                 strict=True)])
        if not bool(checked.any()):
            continue
        p = fit_split(data, features, _trainable(data) & ~every, names, config).predict_proba(features)
        out[kind] = _auc_vs(p, nat, checked)
        out[kind + "_n"] = int(checked.sum())
    return out


def summarize(reports: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and min over seeds of each kind's held-out AUC; benign passing (test, cross-validated)."""
    out: dict[str, dict[str, float]] = {}
    for kind in reports[0]["per_kind"]:
        values = [r["per_kind"][kind].get("auc_held_out") for r in reports]
        if all(v is not None for v in values):
            corpus = [r["per_kind"][kind].get("auc_held_out_corpus", math.nan) for r in reports]
            out[kind] = {"mean": statistics.mean(values), "min": min(values), "max": max(values),
                         "corpus_mean": statistics.mean(corpus)}
    for key in reports[0].get("reader_checked", {}):
        if not key.endswith("_n"):
            values = [r["reader_checked"][key] for r in reports]
            out[key + " (reader-checked)"] = {"mean": statistics.mean(values), "min": min(values),
                                              "n": reports[0]["reader_checked"][key + "_n"]}
    out["benign_pass"] = {"test_mean": statistics.mean(r["benign_pass_test"] for r in reports),
                          "cv_mean": statistics.mean(r["benign_cv"]["pass"] for r in reports),
                          "cv_min": min(r["benign_cv"]["pass"] for r in reports)}
    out["natural_pass"] = {"test_mean": statistics.mean(r["natural_pass_test"] for r in reports)}
    return out


def where_it_fires(lm, data, names, config) -> dict[str, object]:
    """For suffix rows of each family: change point / interior end vs the suffix boundary, in tokens; P(natural)
    of the instruction alone vs with its suffix, under the classifier that never saw the family."""
    features = select_columns(data.features, data.names, names)
    index = {t: i for i, t in enumerate(data.texts)}
    trainable = _trainable(data)
    rows = [r for r in read_family_negatives() if r.get("placement") == "suffix" and r["text"] in index]
    out: dict[str, object] = {}
    for family in sorted({r["family"] for r in rows}):
        fam = [r for r in rows if r["family"] == family]
        every = torch.tensor([s == f"gen_{family}" for s in data.sources])
        probs = fit_split(data, features, trainable & ~every, names, config).predict_proba(features)
        stats = text_stats(lm, [r["text"] for r in fam], use_cache=True)
        cp_delta, end_delta, drops, parents_natural = [], [], [], []
        for r, st in zip(fam, stats, strict=True):
            spans = token_char_spans(lm.tokenizer, r["text"], st)
            boundary = next((i for i, (a, b) in enumerate(spans) if b > int(r["suffix_start"])), len(spans))
            _, k, _ = change_point(st)
            cp_delta.append(k + st.offset - boundary)
            j = interior_end(st)
            if j is not None:
                end_delta.append(j + 1 + st.offset - boundary)
            parent = r.get("parent")
            if parent in index:
                drops.append(float(probs[index[parent]] - probs[index[r["text"]]]))
                parents_natural.append(float(probs[index[parent]]))
        out[family] = {
            "n": len(fam),
            "change_point_tokens_from_boundary_median": statistics.median(cp_delta) if cp_delta else math.nan,
            "change_point_within_2_tokens": sum(abs(d) <= 2 for d in cp_delta) / max(len(cp_delta), 1),
            "interior_end_at_boundary": sum(d == 0 for d in end_delta) / max(len(end_delta), 1),
            "interior_end_within_2_tokens": sum(abs(d) <= 2 for d in end_delta) / max(len(end_delta), 1),
            "p_natural_instruction_alone_median": statistics.median(parents_natural) if parents_natural else math.nan,
            "p_natural_drop_with_suffix_median": statistics.median(drops) if drops else math.nan,
        }
    return out


def shipped_scores(data) -> dict[str, object]:
    """The weights shipped before this change, as they are: AUC of each family vs the test naturals."""
    model = load_classifier(DEFAULT_WEIGHTS)
    p = model.predict_proba(select_columns(data.features, data.names, model.feature_names))
    test = torch.tensor([s == "test" for s in data.split])
    nat = torch.tensor([s in NATURAL_KINDS for s in data.sources]) & test
    benign = torch.tensor([s == BENIGN_SOURCE for s in data.sources])
    out: dict[str, object] = {"threshold": model.threshold, "benign_pass_all": float((p[benign] >= model.threshold)
                                                                                      .float().mean())}
    for kind in FAMILY_SOURCES:
        rows = torch.tensor([s == kind for s in data.sources])
        if bool(rows.any()):
            out[kind] = {"auc": _auc_vs(p, nat, rows), "caught": float((p[rows] < model.threshold).float().mean())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/realism_families.json")
    parser.add_argument("--sets", nargs="+", default=list(FEATURE_SETS), choices=list(FEATURE_SETS))
    parser.add_argument("--train-only-kinds", type=int, default=0, metavar="N",
                        help="N corruptions of each train-only edit family in training (default 0)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="MLP initializations")
    parser.add_argument("--no-where", action="store_true", help="skip the where-it-fires analysis")
    args = parser.parse_args()
    lm = load_model()
    judge = load_judge(JUDGE_MODEL)
    config = RealismTrainConfig(seed=0)
    data = prepare(lm, RealismDatasetConfig(seed=0, mined_path=str(WEIGHTS / "realism_mined.jsonl"),
                                            n_per_train_only=args.train_only_kinds), judge=judge)
    results: dict[str, object] = {"machine": machine(), "n_rows": len(data.texts), "shipped": shipped_scores(data)}
    for name in args.sets:
        per_seed = []
        for seed in args.seeds:  # the MLP's initialization; data and splits stay the same
            seed_config = RealismTrainConfig(seed=seed)
            _, report = fit_and_evaluate(data, FEATURE_SETS[name], seed_config, model_name=lm.name, seed=seed,
                                         previous=WEIGHTS / "realism_v1.json")
            report["benign_cv"] = benign_cv(data, FEATURE_SETS[name], seed_config)
            report["reader_checked"] = reader_checked(data, FEATURE_SETS[name], seed_config)
            per_seed.append(report)
            if seed == args.seeds[0]:
                print(f"== {name} (seed {seed}): {len(FEATURE_SETS[name])} features; benign passing, cross-validated "
                      f"by cluster: {report['benign_cv']['pass']:.3f} of {report['benign_cv']['n']}", flush=True)
                print_report(report)
        results[name] = {"seed_reports": per_seed, "summary": summarize(per_seed)}
        print(f"== {name}: mean over seeds {args.seeds}")
        for key, row in results[name]["summary"].items():
            print(f"  {key:<28}" + "  ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    if not args.no_where:
        results["where_it_fires"] = where_it_fires(lm, data, ALL_FEATURE_NAMES, config)
        print(json.dumps(results["where_it_fires"], indent=1))
    print(json.dumps(results["shipped"], indent=1))
    write_json(args.out, results)


if __name__ == "__main__":
    main()
