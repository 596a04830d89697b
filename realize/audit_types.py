"""What an audit finds for one vector: the evidence behind its verdict (used by the report and the results rows)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from realize.verdict import Calibration, Verdict


@dataclass(frozen=True)
class PromptScore:
    """One prompt measured on held-out contexts and judged for naturalness."""

    prompt: str
    ids: tuple[int, ...]
    attack: str  # which search found it ("fluent", "retrieval", ...)
    cos: float
    specific_cos: float
    per_position_cos: float
    norm_ratio: float
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
class VectorAudit:
    """The audit of one vector (or one control)."""

    vector_id: str
    name: str
    source: str
    kind: str  # "vector" | "null" | "positive"
    layer: int
    scale: float
    method: str
    target_norm: float  # |scale * v|
    frontier: tuple[PromptScore, ...]  # every evaluated frontier prompt
    best: PromptScore | None  # best specific cos among prompts with realism >= threshold (None if none)
    calibration: Calibration | None
    interval: tuple[float, float] | None  # bootstrap interval of the realizability score
    specific_interval: tuple[float, float] | None  # bootstrap interval of best.specific_cos over held-out contexts
    verdict: Verdict | None
    best_unrelated: PromptScore | None = None  # best natural prompt from the corpus (retrieval)
    behavior_recovery: float | None = None
    behavior_interval: tuple[float, float] | None = None
    generations: tuple[Generation, ...] = ()
    manifold: Mapping[str, float] = field(default_factory=dict)  # e.g. share90, share99, random_share90, ...
    seconds: float = 0.0
