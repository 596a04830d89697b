"""Realism classifier: P(natural | prompt) from LM, character/token-shape and repetition features.

The model is a tiny MLP (one hidden layer of 8 tanh units; `hidden=0` gives logistic regression) on standardized
features (`scorers.realism_features.FEATURE_NAMES`), trained on `data.realism_dataset` (naturals vs random, corrupted,
keyboard-mash and LM-sampled negatives, split by source). Its weights ship as JSON in `scorers/weights/realism.json`
with the feature names, standardization, decision threshold and training metadata; `realize train-realism`
rebuilds them. The features' LM statistics come from the model named in the metadata (the embedded SmolLM2);
scoring with another model works but is off-calibration, so a warning is logged.

Baseline (Alon & Kamfonas 2023): the same classifier on perplexity and length only (log perplexity alone, log
token count), reported beside ours.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from realize.data.atomic import write_text_atomic
from realize.data.errors import UserInputError
from realize.data.models import LoadedModel
from realize.scorers.realism_features import FEATURE_NAMES, FEATURE_VERSION, extract_features

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "realism.json"
FORMAT = "realize-realism-classifier"
RETRAIN_HINT = "rebuild it with `realize train-realism`"
BASELINE_FEATURES = ("mean_surprisal", "log_n_tokens")  # perplexity + length (Alon & Kamfonas 2023)


@dataclass(frozen=True, kw_only=True)
class RealismTrainConfig:
    seed: int = 0  # initialization (MLP) and everything derived from it
    hidden: int = 8  # 0: logistic regression; > 0: one hidden layer of this width (tanh)
    l2: float = 1e-3  # weight decay on the weights (not biases), per example
    steps: int = 200  # L-BFGS iterations (full batch)

    def __post_init__(self) -> None:
        if self.hidden < 0:
            raise ValueError(f"hidden: expected >= 0, got {self.hidden}")
        if self.l2 < 0:
            raise ValueError(f"l2: expected >= 0, got {self.l2}")
        if self.steps < 1:
            raise ValueError(f"steps: expected >= 1, got {self.steps}")


@dataclass(frozen=True)
class RealismClassifier:
    """Standardize -> (Linear -> tanh)* -> Linear -> sigmoid. `layers` holds (weight (out, in), bias (out,))."""

    feature_names: tuple[str, ...]
    mean: torch.Tensor
    std: torch.Tensor
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    threshold: float = 0.5  # P(natural) at or above which a prompt is called natural
    metadata: dict[str, Any] = field(default_factory=dict)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.float() - self.mean) / self.std
        for i, (w, b) in enumerate(self.layers):
            x = x @ w.T + b
            if i < len(self.layers) - 1:
                x = torch.tanh(x)
        return x.squeeze(-1)

    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """P(natural) for a feature matrix (N, F) -> (N,)."""
        return torch.sigmoid(self.logits(features))


def fit_classifier(
    features: torch.Tensor, labels: torch.Tensor, feature_names: Sequence[str], config: RealismTrainConfig
) -> RealismClassifier:
    """Class-balanced logistic loss with L2, full-batch L-BFGS; the threshold maximizes balanced accuracy on the
    training set."""
    x = features.double()
    y = labels.double()
    mean = x.mean(0)
    std = x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    gen = torch.Generator().manual_seed(config.seed)
    dims = [z.shape[1]] + ([config.hidden] if config.hidden else []) + [1]
    params: list[torch.Tensor] = []
    for d_in, d_out in zip(dims, dims[1:], strict=False):
        w = (torch.randn(d_out, d_in, generator=gen, dtype=torch.float64) / math.sqrt(d_in)).requires_grad_()
        params += [w, torch.zeros(d_out, dtype=torch.float64, requires_grad=True)]
    pos = float(y.mean())
    weights = torch.where(y > 0.5, 0.5 / max(pos, 1e-6), 0.5 / max(1 - pos, 1e-6))
    optimizer = torch.optim.LBFGS(params, max_iter=config.steps, line_search_fn="strong_wolfe")

    def forward() -> torch.Tensor:
        h = z
        for i in range(0, len(params), 2):
            h = h @ params[i].T + params[i + 1]
            if i < len(params) - 2:
                h = torch.tanh(h)
        return h.squeeze(-1)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(forward(), y, reduction="none") * weights).mean()
        loss = loss + config.l2 * sum(p.pow(2).sum() for p in params[0::2])
        loss.backward()
        return loss

    optimizer.step(closure)
    layers = tuple((params[i].detach().float(), params[i + 1].detach().float()) for i in range(0, len(params), 2))
    model = RealismClassifier(tuple(feature_names), mean.float(), std.float(), layers)
    probs = model.predict_proba(features)
    threshold = best_threshold(probs, labels)
    return RealismClassifier(tuple(feature_names), mean.float(), std.float(), layers, threshold)


def best_threshold(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The score threshold (predict natural when score >= t) maximizing balanced accuracy."""
    best, best_t = -1.0, 0.5
    pos, neg = labels > 0.5, labels <= 0.5
    for t in torch.unique(scores).tolist():
        pred = scores >= t
        bal = 0.5 * (pred[pos].float().mean() + (~pred[neg]).float().mean()).item()
        if bal > best:
            best, best_t = bal, t
    return float(best_t)


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


def _to_json(model: RealismClassifier) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "feature_version": FEATURE_VERSION,
        "feature_names": list(model.feature_names),
        "mean": model.mean.tolist(),
        "std": model.std.tolist(),
        "layers": [{"weight": w.tolist(), "bias": b.tolist()} for w, b in model.layers],
        "threshold": model.threshold,
        "metadata": model.metadata,
    }


def save_classifier(model: RealismClassifier, path: str | os.PathLike[str]) -> None:
    """Write the classifier as JSON (temp file + rename: nothing half-written)."""
    write_text_atomic(path, json.dumps(_to_json(model), indent=1) + "\n")


def load_classifier(path: str | os.PathLike[str] | None = None) -> RealismClassifier:
    """Read classifier weights (default: the shipped `scorers/weights/realism.json`). A missing, corrupt or
    incompatible file raises UserInputError naming the file and how to rebuild it."""
    target = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not target.is_file():
        raise UserInputError(f"{target}: realism classifier weights not found; {RETRAIN_HINT}")
    try:
        raw = json.loads(target.read_text(encoding="utf-8"))
        if raw.get("format") != FORMAT:
            raise ValueError(f"format is {raw.get('format')!r}, expected {FORMAT!r}")
        names = tuple(raw["feature_names"])
        layers = tuple((torch.tensor(l["weight"]), torch.tensor(l["bias"])) for l in raw["layers"])
        model = RealismClassifier(
            names, torch.tensor(raw["mean"]), torch.tensor(raw["std"]), layers, float(raw["threshold"]),
            dict(raw.get("metadata", {})),
        )
        width = len(names)
        if model.mean.shape != (width,) or model.std.shape != (width,) or layers[0][0].shape[1] != width:
            raise ValueError("shapes do not match the feature list")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise UserInputError(f"{target}: corrupt realism classifier weights ({err}); {RETRAIN_HINT}") from err
    if raw.get("feature_version") != FEATURE_VERSION or names != FEATURE_NAMES:
        raise UserInputError(f"{target}: weights were trained on other features (version "
                             f"{raw.get('feature_version')}, expected {FEATURE_VERSION}); {RETRAIN_HINT}")
    return model


def realism_scores(
    lm: LoadedModel,
    prompts: Sequence[str],
    classifier: RealismClassifier | None = None,
    *,
    batch_size: int = 32,
    show_progress: bool = False,
) -> list[float]:
    """P(natural) per prompt (non-empty strings) under the shipped (or given) classifier."""
    classifier = classifier or load_classifier()
    trained_on = classifier.metadata.get("model")
    if trained_on and trained_on != lm.name:
        logger.warning("realism classifier was trained with features from %s, scoring with %s", trained_on, lm.name)
    if not prompts:
        return []
    features = extract_features(lm, prompts, batch_size=batch_size, show_progress=show_progress)
    return classifier.predict_proba(features).tolist()
