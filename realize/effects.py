"""Effect matching on the behavior axis: controls that change the outputs about as much as the steer they judge.

Behavior recovery depends on how hard a steer pushes: a steer far stronger than any prompt mostly makes the model
*depart from its default*, which any instruction does. So the behavior axis compares a steer only with controls of a
similar effect, measured cheaply as the first-answer effect

    e = mean over contexts of KL(steered || base) at the first answer position      (nats)

on the behavior optimization contexts, binned in factors of 2 (`effect_bin`). Behavior nulls are random
directions of the natural shift space (at the steer's norm bins) rescaled so that their effect hits the bin's centre
(`matched_scale`); behavior positives are the held-out prompts whose own first-answer effect (KL(prompted || base))
is nearest the bin's centre, distilled into steers. Both are items per (layers, effect bin).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from realize.data.activations import steer
from realize.data.chat import ChatLayout, encode
from realize.data.models import LoadedModel
from realize.data.steered import forced_logprobs

EFFECT_BINS_PER_OCTAVE = 1  # bins a factor 2 wide: a control is within sqrt(2) of the steer's effect
MIN_EFFECT = 1e-4  # nats: below this a steer does nothing measurable at the first answer token


def effect_bin(effect: float) -> int:
    """The bin of a first-answer effect (a factor 2 wide); effects below `MIN_EFFECT` share the lowest bin."""
    return round(math.log2(max(effect, MIN_EFFECT)) * EFFECT_BINS_PER_OCTAVE)


def bin_effect(index: int) -> float:
    return 2.0 ** (index / EFFECT_BINS_PER_OCTAVE)


def _first_answer(lm: LoadedModel, inputs: Sequence[Sequence[int]]) -> torch.Tensor:
    """(K, V) log-probs of the first answer token after each input."""
    dummy = [lm.tokenizer.eos_token_id or 0]  # the predicting position does not see the token it predicts
    return torch.stack([r[0] for r in forced_logprobs(lm, inputs, [dummy] * len(inputs))])


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """Mean over rows of KL(p || q), log-prob rows (K, V)."""
    return float((p.double().exp() * (p.double() - q.double())).sum(-1).clamp_min(0.0).mean())


def steer_effect(lm: LoadedModel, layout: ChatLayout, goal: Mapping[int, torch.Tensor], contexts: Sequence[str],
                 scale: float = 1.0) -> float:
    """The first-answer effect of adding `scale * goal[i]` at each layer i, on `contexts`."""
    inputs = [layout.place(None, encode(lm.tokenizer, c)).ids for c in contexts]
    base = _first_answer(lm, inputs)
    with steer(lm.model, dict(goal), scale):
        steered = _first_answer(lm, inputs)
    return _kl(steered, base)


def prompt_effects(lm: LoadedModel, layout: ChatLayout, prompts: Sequence[str], contexts: Sequence[str]) -> list[float]:
    """The first-answer effect of each prompt (KL(prompted || base)), on `contexts`."""
    context_ids = [encode(lm.tokenizer, c) for c in contexts]
    base = _first_answer(lm, [layout.place(None, c).ids for c in context_ids])
    out = []
    for prompt in prompts:
        ids = encode(lm.tokenizer, prompt)
        out.append(_kl(_first_answer(lm, [layout.place(ids, c).ids for c in context_ids]), base))
    return out


def matched_scale(lm: LoadedModel, layout: ChatLayout, goal: Mapping[int, torch.Tensor], contexts: Sequence[str],
                  target: float, *, tolerance: float = 0.1, steps: int = 12) -> tuple[float, float]:
    """(c, e): the scale c at which `c * goal` has first-answer effect e within `tolerance` (in log2) of `target`
    (bisection on log c; effects grow with the scale). Stops at the closest found after `steps` evaluations."""
    lo, hi = -8.0, 8.0  # log2 of the scale
    best = (1.0, steer_effect(lm, layout, goal, contexts))
    if abs(math.log2(max(best[1], MIN_EFFECT) / target)) <= tolerance:
        return best
    for _ in range(steps):
        mid = (lo + hi) / 2
        effect = steer_effect(lm, layout, goal, contexts, 2.0**mid)
        if abs(math.log2(max(effect, MIN_EFFECT) / target)) < abs(math.log2(max(best[1], MIN_EFFECT) / target)):
            best = (2.0**mid, effect)
        if abs(math.log2(max(effect, MIN_EFFECT) / target)) <= tolerance:
            break
        lo, hi = (mid, hi) if effect < target else (lo, mid)
    return best
