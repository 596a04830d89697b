"""Audit configuration: one frozen dataclass whose `budget` names a preset.

`AuditConfig(budget="quick")` is exactly what `realize audit --budget quick` runs: every field left at None takes the
preset's value (`PRESETS`), every field given explicitly overrides it. `AuditConfig.preset(name)` is the same.

Contexts: the shipped base contexts are split three ways (seeded): optimization (the search sees only these),
selection (choose the best prompt and the frontier's best points) and test (every number reported or decided).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from realize.data.chat import Placement
from realize.verdict import VerdictThresholds


@dataclass(frozen=True, kw_only=True)
class SearchBudget:
    """Search effort per target (every target and control of an audit runs the same): natural GCG
    (`realize.attacks.natural`) from the best retrieved corpus prompts, or from the LM-guided beam's prompt when
    retrieval is off."""

    steps: int  # natural GCG steps per start
    width: int  # candidates proposed per step
    starts: int  # natural GCG runs, from the best `starts` retrieved prompts (retrieval off: one, from the beam)
    beam_width: int  # beam initializer (searches without retrieval only): prompts kept
    beam_samples: int  # beam initializer: samples per kept prompt
    beam_length: int  # beam initializer: max prompt tokens
    keep_retrieval: int  # best retrieved corpus prompts carried to evaluation
    max_frontier: int  # natural GCG frontier points carried to evaluation, per start

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{f.name}: expected an int >= 1, got {value!r}")


BUDGETS: dict[str, SearchBudget] = {
    "quick": SearchBudget(steps=8, width=40, starts=1, beam_width=4, beam_samples=8, beam_length=8,
                          keep_retrieval=4, max_frontier=6),
    "default": SearchBudget(steps=16, width=48, starts=1, beam_width=5, beam_samples=8, beam_length=10,
                            keep_retrieval=6, max_frontier=8),
    "thorough": SearchBudget(steps=40, width=48, starts=2, beam_width=8, beam_samples=16, beam_length=12,
                             keep_retrieval=10, max_frontier=12),
}

# Everything a budget name sets besides the search itself. Controls: `n_null` nulls drawn from the layer's natural
# shift distribution (they decide), `n_isotropic` isotropic random directions (a labelled reference only), and
# `n_positive` held-out natural prompts, per layer (positives) and per (layer, norm bin) (nulls).
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"n_opt_contexts": 6, "n_selection": 6, "n_test": 10, "n_null": 4, "n_isotropic": 1,
              "n_positive": 4, "behavior_tokens": 16, "behavior_contexts": 2},
    "default": {"n_opt_contexts": 8, "n_selection": 8, "n_test": 16, "n_null": 8, "n_isotropic": 2,
                "n_positive": 6, "behavior_tokens": 24, "behavior_contexts": 3},
    "thorough": {"n_opt_contexts": 12, "n_selection": 12, "n_test": 24, "n_null": 20, "n_isotropic": 4,
                 "n_positive": 12, "behavior_tokens": 32, "behavior_contexts": 4},
}
_PRESET_FIELDS = tuple(PRESETS["default"])


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    budget: str = "default"  # preset: quick | default | thorough (search effort and every None field below)
    placement: Placement = "prefix"  # where prompts go in the user turn
    n_opt_contexts: int | None = None  # optimization contexts (the search's own)
    n_selection: int | None = None  # selection contexts (choose the best prompt)
    n_test: int | None = None  # test contexts (every reported number)
    n_null: int | None = None  # natural-distribution nulls per (layer, norm bin): they decide
    n_isotropic: int | None = None  # isotropic random-direction nulls per (layer, norm bin): reference only
    n_positive: int | None = None  # held-out natural-prompt positives per layer
    behavior_tokens: int | None = None  # tokens generated per context for behavior recovery (0 = skip)
    behavior_contexts: int | None = None  # test contexts used for behavior recovery
    manifold: bool = True  # compute the on-manifold share
    thresholds: VerdictThresholds = field(default_factory=VerdictThresholds)  # verdict thresholds
    seed: int = 0  # seeds the context split, control choice and every search
    show_progress: bool = True  # progress bars

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise ValueError(f"budget: expected one of {', '.join(BUDGETS)}, got {self.budget!r}")
        for name, value in PRESETS[self.budget].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        for name in ("n_opt_contexts", "n_selection", "n_test", "n_positive", "behavior_contexts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("n_null", "n_isotropic", "behavior_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")

    @classmethod
    def preset(cls, budget: str, **overrides: Any) -> AuditConfig:
        """The preset `budget` with some fields overridden (same as `AuditConfig(budget=..., **overrides)`)."""
        return cls(budget=budget, **overrides)

    @property
    def search(self) -> SearchBudget:
        return BUDGETS[self.budget]

    def key(self) -> dict[str, object]:
        """The whole configuration as plain data (what makes two audit directories comparable)."""
        out = dataclasses.asdict(self)
        out.pop("show_progress")
        return out

    def item_key(self) -> dict[str, object]:
        """What one work item's result depends on: not the number of controls (control j is the same item whatever
        n is), not the judgement thresholds (verdicts are recomputed from stored evidence), except min_realism."""
        out = self.key()
        for name in ("n_null", "n_isotropic", "n_positive", "thresholds"):
            out.pop(name)
        out["min_realism"] = self.thresholds.min_realism
        return out


assert set(_PRESET_FIELDS) <= {f.name for f in dataclasses.fields(AuditConfig)}
