"""The attacks by name, each with its entry point and config class (the CLI and the library dispatch through it).

    ATTACKS: dict[str, AttackSpec]       # "natural", "gcg", "beam", "fluent", "relaxed", "random", "retrieval"
    spec = ATTACKS["gcg"]
    result = spec.run(objective, lm, layout, spec.config(steps=50), init=None)

Every entry point has the one signature `run(objective, lm, layout, config, *, init=None) -> AttackResult`
(`attacks.base.Attack`). `takes_init` says whether an attack starts from `init`; those that do not (beam grows its
prompts from nothing, retrieval searches nothing) raise ValueError when given one.
"""

from __future__ import annotations

from dataclasses import dataclass

from realize.attacks import baselines, beam, fluent, gcg, natural, relaxed
from realize.attacks.base import Attack

__all__ = ["ATTACKS", "AttackSpec"]


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack."""

    run: Attack  # run(objective, lm, layout, config, *, init=None) -> AttackResult
    config: type  # its frozen config dataclass (every field has a default)
    takes_init: bool  # whether `init` (a start prompt, token ids) is used
    needs_layout: bool  # whether `layout` must be a ChatLayout (False: None is allowed)


ATTACKS: dict[str, AttackSpec] = {
    "natural": AttackSpec(natural.run, natural.NaturalConfig, takes_init=True, needs_layout=True),
    "gcg": AttackSpec(gcg.run, gcg.GCGConfig, takes_init=True, needs_layout=False),
    "beam": AttackSpec(beam.run, beam.BeamConfig, takes_init=False, needs_layout=True),
    "fluent": AttackSpec(fluent.run, fluent.FluentConfig, takes_init=True, needs_layout=True),
    "relaxed": AttackSpec(relaxed.run, relaxed.RelaxedConfig, takes_init=True, needs_layout=False),
    "random": AttackSpec(baselines.random_search, baselines.RandomSearchConfig, takes_init=True, needs_layout=False),
    "retrieval": AttackSpec(baselines.natural_retrieval, baselines.RetrievalConfig, takes_init=False,
                            needs_layout=False),
}
