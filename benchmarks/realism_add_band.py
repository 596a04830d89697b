"""Give an existing realism weights file its "unverified" band without retraining: the lower edge is chosen on the
seed-0 validation naturals (corpora + benign task prompts, split by cluster) with the rule of `realism.train`
(at most `max_natural_reject` of them below it, never above the threshold); weights, calibration and threshold stay.

    OMP_NUM_THREADS=1 python benchmarks/realism_add_band.py scorers/weights/realism.json scorers/weights/realism_fast.json
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from realize.data.models import load_model
from realize.scorers.realism.dataset import NATURAL_KINDS, RealismDatasetConfig, build_realism_dataset
from realize.scorers.realism.features import ALL_FEATURE_NAMES, FEATURE_NAMES, extract_features, select_columns
from realize.scorers.realism.model import JUDGE_MODEL, load_classifier, load_judge, save_classifier
from realize.scorers.realism.train import RealismTrainConfig, band_lower_edge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--max-natural-reject", type=float, default=RealismTrainConfig().max_natural_reject)
    args = parser.parse_args()
    lm = load_model()
    rows = [r for r in build_realism_dataset(lm, RealismDatasetConfig(seed=0), use_cache=True).to_list()
            if r["split"] == "validation" and r["source"] in NATURAL_KINDS]
    texts = [str(r["text"]) for r in rows]
    models = [load_classifier(path) for path in args.weights]
    judge = load_judge(JUDGE_MODEL) if any(m.uses_judge for m in models) else None
    features = extract_features(lm, texts, judge=judge, use_cache=True)
    names = ALL_FEATURE_NAMES if judge is not None else FEATURE_NAMES
    for path, model in zip(args.weights, models, strict=True):
        p = model.predict_proba(select_columns(features, names, model.feature_names))
        lower = band_lower_edge(p, torch.ones(len(p)), model.threshold, args.max_natural_reject)
        save_classifier(replace(model, unnatural_below=lower), path)
        print(f"{path}: band [{lower:.4f}, {model.threshold:.4f}) on {len(texts)} validation naturals "
              f"({float((p >= model.threshold).float().mean()):.3f} of them natural)")


if __name__ == "__main__":
    main()
