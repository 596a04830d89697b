"""Fitting the realism classifier: class-balanced logistic loss on train, Platt calibration, threshold and band on
validation; and `prepare`, the dataset with its feature matrix (dataset -> features -> train).

The threshold is the highest balanced accuracy among thresholds that pass at least `min_natural_pass` of the
validation naturals; the band's lower edge (`RealismClassifier.unnatural_below`) is the score below which at most
`max_natural_reject` of the validation naturals fall (never above the threshold): calling a prompt "unnatural" is
then wrong for about that share of natural prompts, and the prompts between the edges are "unverified".
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from realize.scorers.realism.dataset import RealismDatasetConfig, build_realism_dataset, save_dataset_jsonl
from realize.scorers.realism.features import ALL_FEATURE_NAMES, FEATURE_NAMES, extract_features
from realize.scorers.realism.model import RealismClassifier


@dataclass(frozen=True, kw_only=True)
class RealismTrainConfig:
    seed: int = 0  # initialization (MLP) and everything derived from it
    hidden: int = 8  # 0: logistic regression; > 0: one hidden layer of this width (tanh)
    l2: float = 1e-3  # weight decay on the weights (not biases), per example
    steps: int = 200  # L-BFGS iterations (full batch)
    min_natural_pass: float = 0.98  # the threshold passes at least this share of validation naturals
    max_natural_reject: float = 0.005  # the band's lower edge rejects at most this share of validation naturals

    def __post_init__(self) -> None:
        if not 0.0 < self.min_natural_pass <= 1.0:
            raise ValueError(f"min_natural_pass: expected in (0, 1], got {self.min_natural_pass}")
        if not 0.0 <= self.max_natural_reject < 1.0:
            raise ValueError(f"max_natural_reject: expected in [0, 1), got {self.max_natural_reject}")
        if self.hidden < 0:
            raise ValueError(f"hidden: expected >= 0, got {self.hidden}")
        if self.l2 < 0:
            raise ValueError(f"l2: expected >= 0, got {self.l2}")
        if self.steps < 1:
            raise ValueError(f"steps: expected >= 1, got {self.steps}")


def fit_classifier(
    features: torch.Tensor,
    labels: torch.Tensor,
    feature_names: Sequence[str],
    config: RealismTrainConfig,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> RealismClassifier:
    """Class-balanced logistic loss with L2, full-batch L-BFGS. With `validation` (features, labels), the logit is
    Platt-calibrated there and the threshold and band chosen there (`calibrated_threshold`, `band_lower_edge`);
    without it, on the training set (for tests and quick fits only)."""
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
        loss = _balanced_bce(forward(), y) + config.l2 * sum(p.pow(2).sum() for p in params[0::2])
        loss.backward()
        return loss

    optimizer.step(closure)
    layers = tuple((params[i].detach().float(), params[i + 1].detach().float()) for i in range(0, len(params), 2))
    model = RealismClassifier(tuple(feature_names), mean.float(), std.float(), layers)
    val_x, val_y = validation if validation is not None else (features, labels)
    calibration = platt(model.logits(val_x), val_y) if validation is not None else (1.0, 0.0)
    model = replace(model, calibration=calibration)
    scores = model.predict_proba(val_x)
    threshold = calibrated_threshold(scores, val_y, config.min_natural_pass)
    return replace(model, threshold=threshold,
                   unnatural_below=band_lower_edge(scores, val_y, threshold, config.max_natural_reject))


def _balanced_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    pos = float(y.mean())
    weights = torch.where(y > 0.5, 0.5 / max(pos, 1e-6), 0.5 / max(1 - pos, 1e-6))
    return (torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none") * weights).mean()


def platt(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(scale, bias) minimizing the class-balanced logistic loss of scale * logit + bias (Platt scaling)."""
    s, y = logits.detach().double(), labels.double()
    ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([ab], max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _balanced_bce(ab[0] * s + ab[1], y)
        loss.backward()
        return loss

    optimizer.step(closure)
    scale, bias = (float(v) for v in ab.detach())
    return (scale, bias) if math.isfinite(scale) and math.isfinite(bias) and scale > 0 else (1.0, 0.0)


def calibrated_threshold(scores: torch.Tensor, labels: torch.Tensor, min_natural_pass: float) -> float:
    """The threshold with the best balanced accuracy among those that pass at least `min_natural_pass` of the
    naturals (labels 1); the highest such threshold wins ties."""
    natural = scores[labels > 0.5].double()
    if natural.numel() == 0:
        return best_threshold(scores, labels)
    k = int(math.floor((1.0 - min_natural_pass) * natural.numel() + 1e-9))
    ceiling = float(torch.sort(natural).values[k])  # passing >= min_natural_pass of naturals needs t <= this
    allowed = scores <= ceiling
    return best_threshold(scores, labels, candidates=torch.unique(scores[allowed]))


def band_lower_edge(scores: torch.Tensor, labels: torch.Tensor, threshold: float, max_natural_reject: float) -> float:
    """The highest edge at or below `threshold` with at most `max_natural_reject` of the naturals (labels 1) below
    it: the `floor(max_natural_reject * n)`-th lowest natural score (the lowest when that is 0)."""
    natural = torch.sort(scores[labels > 0.5].double()).values
    if natural.numel() == 0:
        return threshold
    k = int(math.floor(max_natural_reject * natural.numel() + 1e-9))
    return min(float(natural[k]), threshold)


def best_threshold(scores: torch.Tensor, labels: torch.Tensor, candidates: torch.Tensor | None = None) -> float:
    """The score threshold (predict natural when score >= t) maximizing balanced accuracy (among `candidates`,
    default every distinct score; the highest threshold wins ties)."""
    best, best_t = -1.0, 0.5
    pos, neg = labels > 0.5, labels <= 0.5
    values = torch.unique(scores if candidates is None else candidates).tolist()
    for t in values:
        pred = scores >= t
        bal = 0.5 * (pred[pos].float().mean() + (~pred[neg]).float().mean()).item()
        if bal >= best:
            best, best_t = bal, t
    return float(best_t)


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
    rows: list[dict[str, Any]]  # the dataset rows (provenance of generated negatives included)


def prepare(lm: Any, dataset_config: RealismDatasetConfig, *, judge: Any = None, use_cache: bool = True,
            save_dataset: str | None = None) -> Prepared:
    """Build the dataset and extract its features (with the judge's blocks when a judge is given)."""
    started = time.time()
    dataset = build_realism_dataset(lm, dataset_config, use_cache=use_cache)
    if save_dataset:
        save_dataset_jsonl(dataset, save_dataset)
    built = time.time()
    rows = dataset.to_list()
    texts = [str(r["text"]) for r in rows]
    features = extract_features(lm, texts, judge=judge, use_cache=use_cache, show_progress=True)
    return Prepared(texts, torch.tensor([float(r["label"]) for r in rows]), [str(r["split"]) for r in rows],
                    [str(r["source"]) for r in rows], features,
                    ALL_FEATURE_NAMES if judge is not None else FEATURE_NAMES, judge.name if judge is not None else None,
                    {"dataset": built - started, "features": time.time() - built}, rows)
