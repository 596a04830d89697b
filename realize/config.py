"""Audit configuration: one frozen dataclass whose `budget` names a preset.

`AuditConfig(budget="quick")` is exactly what `realize audit --budget quick` runs: every field left at None takes the
preset's value (`PRESETS`, and `BUDGETS` for `search`), every field given explicitly overrides it. After
construction every field is resolved (no None left), so `to_json()` is the whole configuration and
`AuditConfig.from_json(config.to_json()) == config`: the CLI, the library and a merge of an old directory all judge
with the same typed object, never with a dict.

Contexts: the shipped base contexts are split three ways (seeded): optimization (the search sees only these),
selection (choose the best prompt and the frontier's best points) and test (every number reported or decided).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
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
    behavior_probe: int  # behavior axis: corpus prompts scored with the objective after the effect ranking
    behavior_steps: int  # behavior axis: natural GCG steps on the behavior objective
    behavior_width: int  # behavior axis: candidates per step

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{f.name}: expected an int >= 1, got {value!r}")


BUDGETS: dict[str, SearchBudget] = {
    "quick": SearchBudget(steps=8, width=40, starts=1, beam_width=4, beam_samples=8, beam_length=8,
                          keep_retrieval=4, max_frontier=6, behavior_probe=12, behavior_steps=2, behavior_width=8),
    "default": SearchBudget(steps=16, width=48, starts=1, beam_width=5, beam_samples=8, beam_length=10,
                            keep_retrieval=6, max_frontier=8, behavior_probe=24, behavior_steps=4, behavior_width=8),
    "thorough": SearchBudget(steps=40, width=48, starts=2, beam_width=8, beam_samples=16, beam_length=12,
                             keep_retrieval=10, max_frontier=12, behavior_probe=64, behavior_steps=12,
                             behavior_width=16),
}

# Everything a budget name sets besides the search itself. Controls: `n_null` nulls drawn from the layer's natural
# shift distribution (they decide), `n_isotropic` isotropic random directions (a labelled reference only), and
# `n_positive` held-out natural prompts, per layer (positives) and per (layer, norm bin) (nulls).
# Behavior axis: `behavior_contexts` of the optimization and of the selection contexts, `behavior_test_contexts` of
# the test contexts, `behavior_tokens` of steered text on each; positives distilled in `distill_steps` Adam steps.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"n_opt_contexts": 6, "n_selection": 6, "n_test": 10, "n_null": 4, "n_isotropic": 1,
              "n_positive": 4, "behavior_tokens": 16, "behavior_contexts": 3, "behavior_test_contexts": 6,
              "distill_steps": 30},
    "default": {"n_opt_contexts": 8, "n_selection": 8, "n_test": 16, "n_null": 8, "n_isotropic": 2,
                "n_positive": 6, "behavior_tokens": 24, "behavior_contexts": 4, "behavior_test_contexts": 8,
                "distill_steps": 100},
    "thorough": {"n_opt_contexts": 12, "n_selection": 12, "n_test": 24, "n_null": 20, "n_isotropic": 4,
                 "n_positive": 12, "behavior_tokens": 32, "behavior_contexts": 6, "behavior_test_contexts": 12,
                 "distill_steps": 150},
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
    axes: tuple[str, ...] = ("activation", "behavior")  # which questions to answer (see README: the two axes)
    behavior_tokens: int | None = None  # steered tokens per context on the behavior axis
    behavior_contexts: int | None = None  # behavior axis: optimization and selection contexts (each)
    behavior_test_contexts: int | None = None  # behavior axis: test contexts
    distill_steps: int | None = None  # behavior positives: distillation steps
    search: SearchBudget | None = None  # search effort per target (None: the budget's `BUDGETS` entry)
    n_siblings: int = 6  # content test: form siblings of each best prompt (content words swapped)
    n_unrelated: int = 8  # content test: unrelated corpus instructions whose best is the generic baseline
    hypotheses: tuple[str, ...] = ()  # prompts the user suspects produce each vector's steer: measured and judged
    manifold: bool = True  # compute the on-manifold share
    thresholds: VerdictThresholds = field(default_factory=VerdictThresholds)  # verdict thresholds
    seed: int = 0  # seeds the context split, control choice and every search
    show_progress: bool = True  # progress bars

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise ValueError(f"budget: expected one of {', '.join(BUDGETS)}, got {self.budget!r}")
        if self.search is None:
            object.__setattr__(self, "search", BUDGETS[self.budget])
        from_preset = {name for name in PRESETS[self.budget] if getattr(self, name) is None}
        for name in from_preset:
            object.__setattr__(self, name, PRESETS[self.budget][name])
        if "behavior_contexts" in from_preset:  # a preset's behavior subsets shrink with smaller context sets
            object.__setattr__(self, "behavior_contexts",
                               min(self.behavior_contexts, self.n_opt_contexts, self.n_selection))
        if "behavior_test_contexts" in from_preset:
            object.__setattr__(self, "behavior_test_contexts", min(self.behavior_test_contexts, self.n_test))
        for name in ("n_opt_contexts", "n_selection", "n_test", "n_positive", "behavior_contexts",
                     "behavior_test_contexts", "behavior_tokens", "distill_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("n_null", "n_isotropic", "n_siblings", "n_unrelated"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if not self.axes or any(a not in ("activation", "behavior") for a in self.axes):
            raise ValueError(f"axes: expected a non-empty subset of ('activation', 'behavior'), got {self.axes}")
        object.__setattr__(self, "axes", tuple(a for a in ("activation", "behavior") if a in self.axes))
        object.__setattr__(self, "hypotheses", tuple(self.hypotheses))
        for i, text in enumerate(self.hypotheses):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"hypotheses[{i}] (--prompt): expected a non-empty prompt, got {text!r}")
        if len(set(self.hypotheses)) != len(self.hypotheses):
            raise ValueError(f"hypotheses (--prompt): each prompt once, got {list(self.hypotheses)}")
        if self.behavior_contexts > min(self.n_opt_contexts, self.n_selection):
            raise ValueError(f"behavior_contexts: expected <= n_opt_contexts and n_selection, got "
                             f"{self.behavior_contexts}")
        if self.behavior_test_contexts > self.n_test:
            raise ValueError(f"behavior_test_contexts: expected <= n_test ({self.n_test}), got "
                             f"{self.behavior_test_contexts}")

    @classmethod
    def preset(cls, budget: str, **overrides: Any) -> AuditConfig:
        """The preset `budget` with some fields overridden (same as `AuditConfig(budget=..., **overrides)`)."""
        return cls(budget=budget, **overrides)

    def to_json(self) -> dict[str, Any]:
        """Every resolved field as JSON-ready data (nested configs as objects; tuples as lists)."""
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> AuditConfig:
        """The configuration `to_json` wrote; ValueError (naming the field) on anything else."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"config: expected an object, got {type(raw).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"config: unknown fields {unknown}")
        values = dict(raw)
        try:
            if values.get("thresholds") is not None:
                values["thresholds"] = VerdictThresholds(**values["thresholds"])
            if values.get("search") is not None:
                values["search"] = SearchBudget(**values["search"])
        except TypeError as err:
            raise ValueError(f"config: {err}") from None
        for name in ("axes", "hypotheses"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def key(self) -> dict[str, Any]:
        """The whole configuration as plain data (what makes two audit directories comparable)."""
        out = self.to_json()
        out.pop("show_progress")
        return out

    def item_key(self) -> dict[str, Any]:
        """What one work item's result depends on: not the number of controls (control j is the same item whatever
        n is), not the judgement thresholds (verdicts are recomputed from stored evidence), except min_realism."""
        out = self.key()
        for name in ("n_null", "n_isotropic", "n_positive", "thresholds"):
            out.pop(name)
        out["min_realism"] = self.thresholds.min_realism
        return out


def json_ready(value: Any) -> Any:
    """Plain JSON data: tuples as lists, mappings with string keys, nested all the way down."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


assert set(_PRESET_FIELDS) <= {f.name for f in dataclasses.fields(AuditConfig)}
