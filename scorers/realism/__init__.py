"""The realism judge, P(natural | prompt), in one place. The layout follows the pipeline:

    dataset      `dataset` (labelled rows split by cluster), `sources` (generated negatives, the generator families'
                 outputs, benign task prompts), `corruptions` (near-natural edits), `labels` (hand and reader labels)
    features     `stats` (per-token LM statistics, cached), `lm_features`, `text_features`, `words`, `turns`
                 (change points, interior end, tail, two-LM agreement), `features` (names and the matrix)
    train        `train` (fit, Platt calibration, threshold and "unverified" band on validation; `prepare`)
    evaluate     `evaluate` (AUC, leave-one-generator-out, families held out, perplexity-matched AUC, report)
    model        `model` (the classifier and its weight file, the judge LM, `realism_scores`)

The generators of the fluent adversarial negatives need the attacks, so they live in the composition layer
(`realize.realism_negatives`); their outputs ship here as data (`negatives/<family>.jsonl`), as do the benign task
prompts (`benign/`). `realize train-realism` runs dataset -> features -> train -> evaluate.

Stable names, re-exported here: `RealismClassifier` (with `threshold`, `unnatural_below`, `band`, `classify`),
`load_classifier`, `save_classifier`, `realism_scores`, `load_judge`, `feature_code_digest` (for cache keys: the
feature code and the versions that compute features), `FEATURE_NAMES`, `ALL_FEATURE_NAMES`.
"""

from realize.scorers.realism.evaluate import auc
from realize.scorers.realism.features import (
    ALL_FEATURE_NAMES,
    FEATURE_NAMES,
    FEATURE_VERSION,
    extract_features,
    select_columns,
)
from realize.scorers.realism.model import (
    DEFAULT_WEIGHTS,
    FAST_WEIGHTS,
    JUDGE_MODEL,
    RealismClassifier,
    Verdict,
    feature_code_digest,
    load_classifier,
    load_judge,
    realism_scores,
    save_classifier,
)
from realize.scorers.realism.train import (
    RealismTrainConfig,
    best_threshold,
    calibrated_threshold,
    fit_classifier,
    platt,
)

__all__ = [
    "ALL_FEATURE_NAMES", "DEFAULT_WEIGHTS", "FAST_WEIGHTS", "FEATURE_NAMES", "FEATURE_VERSION", "JUDGE_MODEL",
    "RealismClassifier", "RealismTrainConfig", "Verdict", "auc", "best_threshold", "calibrated_threshold",
    "extract_features", "feature_code_digest", "fit_classifier", "load_classifier", "load_judge", "platt", "realism_scores",
    "save_classifier", "select_columns",
]
