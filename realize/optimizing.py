"""One prompt search for one steering vector, outside the audit: `realize optimize` and `realize.optimize(...)`.

The request (`OptimizeRequest`) names the attack and its config, the objective and the contexts; `run_optimize`
builds the objective on the optimization contexts, runs the attack (from `init`, or from the best prompt of
`init_from`), and measures the best prompt on both context sets:

- `objective="activation"`: the activation shift at the vector's layer(s) (specific cosine with g estimated on each
  set); the vector may span several layers (one steer: the loss sums over them);
- `objective="behavior"`: KL(steered || prompted) along the steered model's continuations of the optimization
  contexts (`realize.attacks.behavior_objective`); measured as behavior recovery, direction and push of the effect.

The held-out set here is for reading the result, not for choosing among candidates: the attack returns its own best
(chosen on optimization contexts). The audit's three-way split is what to use when a number must be trusted.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from realize.attacks import ATTACKS
from realize.attacks.base import AttackResult, Objective
from realize.attacks.behavior_objective import BehaviorObjective
from realize.attacks.objectives import ActivationObjectiveConfig, ActivationShiftObjective, estimate_generics
from realize.data.chat import Placement, chat_layout, encode
from realize.data.models import LoadedModel, pad_id
from realize.data.shift import prompt_shifts_at, shift_metrics
from realize.data.steered import steered_contexts
from realize.data.vectors import SteeringVector
from realize.scorers.behavior import measure_prompts

ObjectiveName = Literal["activation", "behavior"]


@dataclass(frozen=True, kw_only=True)
class OptimizeRequest:
    attack: str = "natural"  # a name of `realize.attacks.ATTACKS`
    attack_config: Any = None  # the attack's config dataclass (None: its defaults)
    objective: ObjectiveName = "activation"  # activation shift, or behavior (KL along the steered text)
    objective_config: ActivationObjectiveConfig = field(default_factory=ActivationObjectiveConfig)  # activation
    specific: bool = True  # estimate g and use the specific-cosine term (activation)
    behavior_tokens: int = 24  # steered tokens per context (behavior)
    placement: Placement = "prefix"  # where the prompt goes
    init: tuple[int, ...] | None = None  # start prompt (token ids)
    init_from: str | None = None  # or start from the best prompt of this attack (retrieval, beam)
    init_config: Any = None  # that attack's config (None: its defaults)

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"attack: expected one of {', '.join(ATTACKS)}, got {self.attack!r}")
        if self.objective not in ("activation", "behavior"):
            raise ValueError(f"objective: expected 'activation' or 'behavior', got {self.objective!r}")
        if self.init is not None and self.init_from is not None:
            raise ValueError("init, init_from: pass one of them")
        if (self.init is not None or self.init_from is not None) and not ATTACKS[self.attack].takes_init:
            raise ValueError(f"init: attack {self.attack!r} takes no start prompt")
        if self.init_from is not None and self.init_from not in ("retrieval", "beam"):
            raise ValueError(f"init_from: expected 'retrieval' or 'beam', got {self.init_from!r}")
        if self.behavior_tokens < 1:
            raise ValueError(f"behavior_tokens: expected >= 1, got {self.behavior_tokens}")


@dataclass(frozen=True)
class OptimizeReport:
    """The attack's result and its best prompt measured on the optimization and held-out contexts."""

    result: AttackResult
    objective: ObjectiveName
    layers: tuple[int, ...]
    target_norm: float
    opt: dict[str, Any]  # metrics on the optimization contexts
    heldout: dict[str, Any]  # metrics on the held-out contexts
    contexts: dict[str, list[str]]
    seconds: float

    @property
    def best_prompt(self) -> str:
        return self.result.best_prompt

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (the trajectory and typed frontier points as dicts)."""
        r = self.result
        return {
            "attack": r.attack, "objective": self.objective, "layers": list(self.layers),
            "target_norm": self.target_norm, "best_prompt": r.best_prompt, "best_ids": list(r.best_ids),
            "best_loss": r.best_loss, "opt": self.opt, "heldout": self.heldout,
            "trajectory": [dataclasses.asdict(s) for s in r.trajectory],
            "frontier": [dataclasses.asdict(f) for f in r.frontier], "config": {"attack": dict(r.config)},
            "contexts": self.contexts, "n_evaluations": r.n_evaluations, "search_seconds": r.seconds,
            "seconds": self.seconds,
        }


def _activation_metrics(lm: LoadedModel, layout: Any, goal: dict[int, torch.Tensor], prompt: Sequence[int],
                        contexts: Sequence[str], generics: dict[int, torch.Tensor] | None) -> dict[str, Any]:
    tok = lm.tokenizer
    deltas = prompt_shifts_at(lm.model, layout, [list(prompt)], [encode(tok, c) for c in contexts], sorted(goal),
                              pad_id=pad_id(tok))
    per_layer = {i: dataclasses.asdict(shift_metrics(deltas[i][0], goal[i], None if generics is None else
                                                     generics[i])) for i in sorted(goal)}
    if len(per_layer) == 1:
        return next(iter(per_layer.values()))
    mean = {k: sum(m[k] for m in per_layer.values()) / len(per_layer)
            for k in ("cos", "per_position_cos", "norm_ratio") }
    if generics is not None:
        mean["specific_cos"] = sum(m["specific_cos"] for m in per_layer.values()) / len(per_layer)
    return {**mean, "per_layer": {str(i): m for i, m in per_layer.items()}}


def run_optimize(lm: LoadedModel, vector: SteeringVector, opt: Sequence[str], heldout: Sequence[str],
                 request: OptimizeRequest) -> OptimizeReport:
    """Search on `opt` contexts for a prompt that does what `vector` (scale included) does; measure on both sets."""
    start_time = time.perf_counter()
    if vector.scale is None:
        raise ValueError("vector: no scale (steering adds scale * v)")
    layout = chat_layout(lm.tokenizer, request.placement)
    goal = {i: float(vector.scale) * v.float() for i, v in vector.directions.items()}
    tok = lm.tokenizer
    objective: Objective
    generics: tuple[dict[int, torch.Tensor] | None, dict[int, torch.Tensor] | None] = (None, None)
    steered_held = []
    if request.objective == "activation":
        if request.specific:
            generics = (estimate_generics(lm, layout, sorted(goal), opt),
                        estimate_generics(lm, layout, sorted(goal), heldout))
        objective = ActivationShiftObjective(lm.model, tok, layout, goal, None, [encode(tok, c) for c in opt],
                                             generic=generics[0], config=request.objective_config)
    else:
        steered = steered_contexts(lm, layout, vector.directions, float(vector.scale), opt, request.behavior_tokens)
        steered_held = steered_contexts(lm, layout, vector.directions, float(vector.scale), heldout,
                                        request.behavior_tokens)
        objective = BehaviorObjective(lm.model, tok, layout, steered)
    start = None
    init = request.init
    if request.init_from is not None:
        spec = ATTACKS[request.init_from]
        start = spec.run(objective, lm, layout, request.init_config or spec.config())
        init = start.best_ids
    spec = ATTACKS[request.attack]
    result = spec.run(objective, lm, layout, request.attack_config or spec.config(), init=init)
    if start is not None:
        config = {**result.config, "init_from": start.attack, "init_prompt_text": start.best_prompt,
                  "init_seconds": start.seconds}
        result = dataclasses.replace(result, config=config, seconds=result.seconds + start.seconds,
                                     n_evaluations=result.n_evaluations + start.n_evaluations)
    best = list(result.best_ids)
    if request.objective == "activation":
        opt_metrics = _activation_metrics(lm, layout, goal, best, opt, generics[0])
        held_metrics = _activation_metrics(lm, layout, goal, best, heldout, generics[1])
    else:
        opt_metrics = dict(objective.metrics(torch.tensor(best)))
        held_metrics = dataclasses.asdict(measure_prompts(lm, layout, steered_held, [best])[0])
    target_norm = float(torch.linalg.vector_norm(torch.cat([goal[i] for i in sorted(goal)])))
    return OptimizeReport(result, request.objective, tuple(sorted(goal)), target_norm, opt_metrics, held_metrics,
                          {"opt": list(opt), "heldout": list(heldout)}, time.perf_counter() - start_time)
