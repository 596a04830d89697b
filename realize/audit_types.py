"""What an audit finds for one target, kept apart from how it is judged.

- `VectorAudit` is the *evidence* of one work item (a vector or a control): the searched prompts measured on
  selection and test contexts, the best prompt (chosen on selection contexts, reported on test contexts), magnitude
  facts, behavior, generations. It is what `realize.audit_store` saves; it never holds a verdict.
- `Judgement` is what the controls make of that evidence (`realize.judging`): calibration, verdict, reason,
  stability. It is recomputed from stored evidence whenever outputs are merged.
- `JudgedAudit` pairs the two (what the report, the results rows and the library API show).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from realize.verdict import Calibration, ContextEvidence, DirectionVerdict, LayersEvidence, Magnitude, MeanEvidence, Verdict

Kind = Literal["vector", "null", "null-isotropic", "positive", "behavior-positive"]
KINDS: tuple[Kind, ...] = ("vector", "null", "null-isotropic", "positive", "behavior-positive")
Axis = Literal["activation", "behavior"]
AXES: tuple[Axis, ...] = ("activation", "behavior")


@dataclass(frozen=True)
class PromptScore:
    """One searched prompt: its specific cosine on selection contexts (what chooses), everything else on test
    contexts (what is reported), and how natural it reads."""

    prompt: str
    ids: tuple[int, ...]
    attack: str  # which search found it ("fluent", "retrieval", ...)
    selection_specific_cos: float  # on selection contexts: used only to choose
    cos: float  # test contexts from here on
    specific_cos: float
    per_position_cos: float
    norm_ratio: float  # |mean shift| / |target|
    fve: float  # 1 - |s - t|^2 / |t|^2
    perplexity: float
    worst_window_perplexity: float
    realism: float
    per_context_cos: tuple[float, ...] = ()
    per_layer: tuple[tuple[int, float, float, float], ...] = ()  # several layers: (layer, cos, specific cos, ratio)


@dataclass(frozen=True)
class Generation:
    context: str
    steered: str
    prompted: str
    base: str


@dataclass(frozen=True)
class BehaviorScore:
    """One searched prompt on the behavior axis: recovery on selection contexts (what chooses), everything else on
    test contexts (see `realize.scorers.behavior.BehaviorMeasure`)."""

    prompt: str
    ids: tuple[int, ...]
    attack: str
    selection_recovery: float  # on selection contexts: used only to choose
    recovery: float  # test contexts from here on: mean of per-context 1 - KL(S||P)/KL(S||B)
    per_context: tuple[float, ...]
    kl: float  # mean KL(steered || prompted) per token
    prompt_effect: float  # mean KL(prompted || base) per token along the steered text
    direction_cos: float  # do the prompt and the vector push the same tokens? (cos of log-prob changes of y)
    effect_ratio: float  # how hard, relative to the vector (1 = as hard, > 1 harder)
    perplexity: float
    worst_window_perplexity: float
    realism: float


def specific_recovery(recovery: float, generic: float) -> float:
    """1 - (1 - r) / (1 - max(g, 0)): recovery r measured against an unrelated instruction's g instead of the base
    model (g <= 0, no instruction helps: r itself; nan when either is nan)."""
    if not (math.isfinite(recovery) and math.isfinite(generic)):
        return math.nan
    return 1.0 - (1.0 - recovery) / max(1.0 - max(generic, 0.0), 1e-6)


@dataclass(frozen=True)
class BehaviorAxis:
    """Evidence on the behavior axis: can a natural prompt make the model do what the vector does?"""

    effect: float  # the vector's mean KL(steered || base) per token on test contexts
    inert: bool  # effect below the floor: there is no behavior to reproduce
    frontier: tuple[BehaviorScore, ...]
    best: BehaviorScore | None  # best selection recovery among natural-enough prompts
    best_unrelated: BehaviorScore | None  # the same among retrieved corpus prompts
    activation_prompt: BehaviorScore | None  # the activation axis's best prompt, measured here (vectors)
    evidence: MeanEvidence | None  # per-test-context recoveries of `best`, for the joint bootstrap
    generations: tuple[Generation, ...] = ()  # steered / prompted (best) / base on test contexts (vectors)
    vector_norm: float = 0.0  # |a v| of the steer measured
    distill_losses: tuple[float, float] | None = None  # behavior positives: KL before and after distillation
    generic: BehaviorScore | None = None  # vectors: the best of a panel of unrelated corpus instructions (chosen on
    # selection contexts, measured on test): what an instruction that has nothing to do with the vector recovers

    def specific(self, score: BehaviorScore, *, selection: bool = False) -> float | None:
        """The share of what the unrelated-panel instruction leaves that `score`'s prompt closes (test contexts, or
        selection contexts); None without a panel."""
        if self.generic is None:
            return None
        if selection:
            return specific_recovery(score.selection_recovery, self.generic.selection_recovery)
        return specific_recovery(score.recovery, self.generic.recovery)

    @property
    def value(self) -> float | None:
        """The number the behavior verdict rests on: the best prompt's test recovery, floored at 0 (no prompt at
        all scores 0, so a prompt that does worse recovers nothing); None without a natural-enough prompt."""
        if self.best is None or not math.isfinite(self.best.recovery):
            return None
        return max(self.best.recovery, 0.0)


@dataclass(frozen=True)
class VectorAudit:
    """The evidence of one vector (or control) at one layer. Selection contexts chose `best`; test contexts
    measured everything reported."""

    vector_id: str
    name: str
    source: str
    kind: Kind
    axes: tuple[Axis, ...]  # the axes measured for this item
    layer: int  # the deepest of `layers`
    layers: tuple[int, ...]  # every layer the steer acts at (one for most vectors)
    scale: float
    method: str
    target_norm: float  # |scale * v| (several layers: over all of them together)
    frontier: tuple[PromptScore, ...]  # activation axis from here to `magnitude`: every evaluated prompt
    best: PromptScore | None  # best selection-context specific cos among natural-enough prompts (None: none)
    best_unrelated: PromptScore | None  # the same among retrieved corpus prompts only
    best_no_retrieval: PromptScore | None  # positives: the same from a second search with retrieval turned off
    evidence: ContextEvidence | LayersEvidence | None  # per-test-context numbers of `best`, for the joint bootstrap
    magnitude: Magnitude
    min_realism: float  # the realism threshold a best prompt had to pass
    behavior: BehaviorAxis | None = None  # the behavior axis (None: not measured for this item)
    manifold: Mapping[str, float] = field(default_factory=dict)  # share90, share99, random_share90, ...
    seconds: float = 0.0

    @property
    def value(self) -> float | None:
        """The number the activation verdict rests on: the best prompt's test-context specific cosine (None: no
        natural-enough prompt, or the axis was not measured)."""
        return None if self.best is None else self.best.specific_cos

    def axis_value(self, axis: Axis) -> float | None:
        if axis == "activation":
            return self.value if "activation" in self.axes else None
        return None if self.behavior is None else self.behavior.value


@dataclass(frozen=True)
class Judgement:
    """How the controls of the item's layer (and norm) judge its evidence."""

    verdict: Verdict
    direction: DirectionVerdict
    reason: str  # why, in one or two sentences (direction and magnitude)
    calibration: Calibration | None
    stability: float  # share of joint test-context resamples giving the same verdict
    score_interval: tuple[float, float] | None  # bootstrap interval of the score
    value_interval: tuple[float, float] | None  # bootstrap interval of the specific cosine
    prompt_verdicts: tuple[str, ...] = ()  # per frontier prompt: its verdict on its own numbers (see judging)
    controls: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # kind -> control ids used


@dataclass(frozen=True)
class JudgedAudit:
    audit: VectorAudit
    activation: Judgement | None  # None where the axis was not measured
    behavior: Judgement | None = None

    def judgement(self, axis: Axis) -> Judgement | None:
        return self.activation if axis == "activation" else self.behavior

    @property
    def verdict(self) -> Verdict:
        """The activation verdict (the behavior one for items measured on behavior only)."""
        main = self.activation if self.activation is not None else self.behavior
        assert main is not None, "an item is judged on at least one axis"
        return main.verdict
