"""What an audit finds for one target, kept apart from how it is judged.

- A *score* is one searched prompt on one axis: its value on selection contexts (what chooses) and on test contexts
  (what is reported), the axis's own facts, and how natural it reads (`ActivationScore`, `BehaviorScore`: the same
  `selection` / `value` / `realism` interface, so one `pick` serves both axes).
- `AxisEvidence` is one axis of one item, the same shape on every axis: the frontier of scored prompts, the best one
  (with its per-test-context evidence for the joint bootstrap), the baselines of the content test (form siblings of
  the best prompt, the best of an unrelated-instruction panel; positives also their own prompt and its siblings),
  and the behavior facts where the axis is behavior.
- `VectorAudit` is the evidence of one work item (a vector or a control): `axes` maps each measured axis to its
  evidence. It is what `realize.store` saves; it never holds a verdict.
- `Judgement` / `JudgedAudit`: what the controls make of the evidence (`realize.judging`), recomputed from stored
  evidence whenever outputs are merged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from realize.magnitude import Magnitude
from realize.resampling import AnyEvidence, FormEvidence
from realize.stats import Calibration
from realize.verdict import Content, DirectionVerdict, Verdict

Kind = Literal["vector", "null", "null-isotropic", "positive", "behavior-positive"]
KINDS: tuple[Kind, ...] = ("vector", "null", "null-isotropic", "positive", "behavior-positive")
Axis = Literal["activation", "behavior"]
AXES: tuple[Axis, ...] = ("activation", "behavior")
POSITIVE_KIND: dict[Axis, Kind] = {"activation": "positive", "behavior": "behavior-positive"}


@dataclass(frozen=True)
class ActivationScore:
    """One prompt on the activation axis: specific cosine on selection contexts (chooses), everything else on test
    contexts (reported)."""

    prompt: str
    ids: tuple[int, ...]
    attack: str  # which search found it ("natural", "retrieval", "sibling", ...)
    selection: float  # specific cos on selection contexts: used only to choose
    value: float  # specific cos on test contexts (the generic direction removed from shift and target)
    cos: float  # raw cos of the mean shift (test)
    per_position_cos: float
    norm_ratio: float  # |mean shift| / |target|
    fve: float  # 1 - |s - t|^2 / |t|^2
    perplexity: float
    worst_window_perplexity: float
    realism: float
    per_context: tuple[float, ...] = ()  # raw cos of each test context's mean shift with the target
    per_layer: tuple[tuple[int, float, float, float], ...] = ()  # several layers: (layer, cos, specific cos, ratio)


@dataclass(frozen=True)
class BehaviorScore:
    """One prompt on the behavior axis: pooled recovery on selection contexts (chooses), everything else on test
    contexts (`realize.scorers.behavior.BehaviorMeasure`)."""

    prompt: str
    ids: tuple[int, ...]
    attack: str
    selection: float  # pooled recovery on selection contexts: used only to choose
    value: float  # pooled recovery on test contexts: 1 - sum KL(S||P) / sum KL(S||B), never floored
    per_context: tuple[float, ...]  # per-context recovery (nan where the vector changes nothing)
    kl: float  # mean KL(steered || prompted) per token
    prompt_effect: float  # mean KL(prompted || base) per token along the steered text
    direction_cos: float  # do the prompt and the vector push the same tokens? (cos of log-prob changes of y)
    effect_ratio: float  # how hard, relative to the vector (1 = as hard, > 1 harder)
    perplexity: float
    worst_window_perplexity: float
    realism: float


Score = ActivationScore | BehaviorScore


@dataclass(frozen=True)
class Measured:
    """A score with the per-test-context evidence its value is recomputed from in the joint bootstrap, and the
    evidence of the content test's value (activation: the whitened cosine, `realize.setting.whitening`; behavior:
    the recovery itself)."""

    score: Score
    evidence: AnyEvidence
    content_evidence: AnyEvidence | None = None  # None: the content test uses `evidence`

    @property
    def content(self) -> AnyEvidence:
        return self.evidence if self.content_evidence is None else self.content_evidence


@dataclass(frozen=True)
class Generation:
    context: str
    steered: str
    prompted: str
    base: str


@dataclass(frozen=True)
class BehaviorFacts:
    """What only the behavior axis has: the steer's own effect, and for vectors the generations side by side."""

    effect: float  # the steer's mean KL(steered || base) per token on test contexts
    inert: bool  # effect below the floor: there is no behavior to reproduce
    steer_norm: float  # |a v| of the steer measured (all layers together)
    generations: tuple[Generation, ...] = ()  # steered / prompted (best) / base on test contexts (vectors)
    activation_prompt: BehaviorScore | None = None  # vectors: the activation axis's best prompt, measured here
    distill_losses: tuple[float, float] | None = None  # behavior positives: KL before and after distillation


@dataclass(frozen=True)
class Hypothesis:
    """A prompt the user suspects produces the steer (`AuditConfig.hypotheses`): measured like the best prompt, with
    its own form siblings, but never chosen on the data (its test value is judged as it is)."""

    measured: Measured
    siblings: tuple[Measured, ...]
    form: FormEvidence | None = None  # activation: the content cosine's evidence against its siblings


@dataclass(frozen=True)
class AxisEvidence:
    """One axis of one item (see module docstring)."""

    axis: Axis
    frontier: tuple[Score, ...]  # every evaluated prompt
    best: Measured | None  # highest selection value among natural-enough prompts (None: none)
    best_corpus: Score | None  # the same among retrieved corpus prompts only
    best_search_alone: Score | None  # positives: the same from a second search with retrieval turned off
    siblings: tuple[Measured, ...]  # form siblings of the best prompt: same template, content words swapped
    unrelated: Measured | None  # the best (on selection contexts) of a panel of unrelated corpus instructions
    true_prompt: Measured | None = None  # positives: the held-out prompt itself
    true_siblings: tuple[Measured, ...] = ()  # positives: its form siblings (the content margin a true prompt shows)
    behavior: BehaviorFacts | None = None  # behavior axis only
    hypotheses: tuple[Hypothesis, ...] = ()  # vectors: the user's suspected prompts, in the order given
    form: FormEvidence | None = None  # activation: the content cosine of the best prompt against its siblings
    true_form: FormEvidence | None = None  # activation positives: the same for the held-out prompt

    def as_best(self, hypothesis: Hypothesis, min_realism: float) -> AxisEvidence:
        """This evidence with `hypothesis` standing in for the best prompt (and its siblings), so it is judged by the
        same rules against the same controls; no best prompt when the realism judge does not call it natural."""
        natural = hypothesis.measured.score.realism >= min_realism
        return replace(self, frontier=(hypothesis.measured.score,), best=hypothesis.measured if natural else None,
                       siblings=hypothesis.siblings if natural else (), form=hypothesis.form if natural else None,
                       hypotheses=())

    @property
    def value(self) -> float | None:
        """The number the axis's verdict rests on: the best prompt's test value (None: no natural-enough prompt)."""
        if self.best is None or not math.isfinite(self.best.score.value):
            return None
        return self.best.score.value

    @property
    def content_margin(self) -> float | None:
        """The best prompt's content-test value minus the mean of its form siblings' (None: no best prompt or
        siblings)."""
        return margin(self.best, self.siblings)

    @property
    def true_margin(self) -> float | None:
        """Positives: the held-out prompt's test value minus the mean of its form siblings'."""
        return margin(self.true_prompt, self.true_siblings)


def margin(prompt: Measured | None, siblings: tuple[Measured, ...]) -> float | None:
    """The prompt's content-test value minus the mean of its siblings' (None without a prompt or siblings)."""
    values = [v for s in siblings if math.isfinite(v := s.content.value())]
    if prompt is None or not values or not math.isfinite(own := prompt.content.value()):
        return None
    return own - sum(values) / len(values)


@dataclass(frozen=True)
class VectorAudit:
    """The evidence of one vector (or control) at its layer(s). Selection contexts chose every best prompt; test
    contexts measured everything reported."""

    vector_id: str
    name: str
    source: str
    kind: Kind
    layers: tuple[int, ...]  # every layer the steer acts at (one for most vectors)
    layer_norms: tuple[float, ...]  # |a v_i| at each of `layers`
    scale: float
    method: str
    target_norm: float  # |a v| over all layers together
    magnitude: Magnitude
    min_realism: float  # the realism threshold a best prompt had to pass
    unnatural_below: float | None  # below this the judge says "unnatural"; [this, min_realism): "unverified"
    axes: Mapping[Axis, AxisEvidence]  # the axes measured for this item, in order
    manifold: Mapping[str, float] = field(default_factory=dict)  # share90, share99, random_share90, ...
    prompt: str = ""  # positives: the natural prompt behind the target
    nearest_corpus: tuple[str, float] | None = None  # positives: the closest retrieval prompt kept, its specific cos
    source_sha256: str | None = None  # vectors: the digest of the file the steer was read from
    strength: tuple[float, ...] = ()  # |a v_i| / median residual-stream norm at each of `layers`
    effect: float | None = None  # behavior: first-answer effect (vectors: own; nulls: matched; positives: prompt's)
    effect_bin: int | None = None  # behavior: the effect bin the item belongs to (`realize.effects`)
    seconds: float = 0.0

    @property
    def layer(self) -> int:
        """The deepest layer."""
        return self.layers[-1]

    def value(self, axis: Axis) -> float | None:
        evidence = self.axes.get(axis)
        return None if evidence is None else evidence.value


@dataclass(frozen=True)
class ContentTest:
    """The content test of one judged value: form siblings and an unrelated instruction against the prompt."""

    outcome: Content  # specific | form | generic
    margin: float | None  # the prompt's value minus its siblings' mean
    true_margin: float | None  # the same for the positives' own prompts (median): what content is worth here
    unrelated: float | None  # the unrelated-panel instruction's test value
    unrelated_spread: float | None  # paired bootstrap spread of value - unrelated
    cosine: float | None = None  # with `content_cosine`: the prompt's content cosine against its siblings
    true_cosine: float | None = None  # the same for the positives' own prompts (median): its calibration


@dataclass(frozen=True)
class Judgement:
    """How the controls of the item's layers (and norm) judge its evidence on one axis."""

    verdict: Verdict
    direction: DirectionVerdict
    reason: str  # why, in one or two sentences
    calibration: Calibration | None
    stability: float  # share of joint test-context resamples giving the same verdict
    score_interval: tuple[float, float] | None  # bootstrap interval of the score
    value_interval: tuple[float, float] | None  # bootstrap interval of the value
    content: ContentTest | None = None  # None when the direction does not pass
    prompt_verdicts: tuple[str, ...] = ()  # per frontier prompt: its verdict on its own numbers (see judging)
    controls: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # kind -> control ids used
    hypotheses: tuple[Judgement, ...] = ()  # the user's suspected prompts, each judged as if it were the best


@dataclass(frozen=True)
class JudgedAudit:
    audit: VectorAudit
    judgements: Mapping[Axis, Judgement]  # one per measured axis

    def judgement(self, axis: Axis) -> Judgement | None:
        return self.judgements.get(axis)

    @property
    def verdict(self) -> Verdict:
        """The activation verdict (the behavior one for items measured on behavior only)."""
        return next(iter(self.judgements.values())).verdict
