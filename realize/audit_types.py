"""What an audit finds for one target, kept apart from how it is judged.

- `VectorAudit` is the *evidence* of one work item (a vector or a control): the searched prompts measured on
  selection and test contexts, the best prompt (chosen on selection contexts, reported on test contexts), magnitude
  facts, behavior, generations. It is what `realize.audit_store` saves; it never holds a verdict.
- `Judgement` is what the controls make of that evidence (`realize.judging`): calibration, verdict, reason,
  stability. It is recomputed from stored evidence whenever outputs are merged.
- `JudgedAudit` pairs the two (what the report, the results rows and the library API show).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from realize.verdict import Calibration, DirectionVerdict, Magnitude, ContextEvidence, Verdict

Kind = Literal["vector", "null", "null-isotropic", "positive"]
KINDS: tuple[Kind, ...] = ("vector", "null", "null-isotropic", "positive")


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


@dataclass(frozen=True)
class Generation:
    context: str
    steered: str
    prompted: str
    base: str


@dataclass(frozen=True)
class Behavior:
    """Behavior recovery of one prompt against the vector, on test contexts (see `realize.scorers.behavior`)."""

    prompt: str
    recovery: float
    interval: tuple[float, float]
    effect_kl: float  # mean KL(steered || base) per token: how much the vector changes the outputs
    inert: bool  # effect below the scorer's floor: recovery is not meaningful


@dataclass(frozen=True)
class VectorAudit:
    """The evidence of one vector (or control) at one layer. Selection contexts chose `best`; test contexts
    measured everything reported."""

    vector_id: str
    name: str
    source: str
    kind: Kind
    layer: int
    scale: float
    method: str
    target_norm: float  # |scale * v|
    frontier: tuple[PromptScore, ...]  # every evaluated prompt
    best: PromptScore | None  # best selection-context specific cos among natural-enough prompts (None: none)
    best_unrelated: PromptScore | None  # the same among retrieved corpus prompts only
    best_no_retrieval: PromptScore | None  # positives: the same from a second search with retrieval turned off
    evidence: ContextEvidence | None  # per-test-context numbers of `best`, for the joint bootstrap
    magnitude: Magnitude
    min_realism: float  # the realism threshold `best` had to pass
    behavior: Behavior | None = None  # of `best` (vectors only)
    behavior_unrelated: Behavior | None = None  # of `best_unrelated`: the baseline for the vector's number
    generations: tuple[Generation, ...] = ()
    manifold: Mapping[str, float] = field(default_factory=dict)  # share90, share99, random_share90, ...
    seconds: float = 0.0

    @property
    def value(self) -> float | None:
        """The number the verdict rests on: the best prompt's test-context specific cosine (None: no prompt)."""
        return None if self.best is None else self.best.specific_cos


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
    judgement: Judgement

    @property
    def verdict(self) -> Verdict:
        return self.judgement.verdict
