"""Objectives the negative generators optimize against, drawn at random per run (one objective per run).

Kinds (`OBJECTIVE_KINDS`):

- `target_string`: nanoGCG's target-string cross-entropy (`attacks.objectives.TargetStringObjective`): the prompt is
  appended to a message (the natural instruction for a suffix run, nothing for a whole-prompt run) and the
  assistant must start with one of `TARGETS` (plain, persona, refusal-flip, format and fact targets);
- `activation`: the activation shift at one block, layer drawn from `LAYERS`, towards the mean shift of a natural
  prompt of the `natural_prompts` corpus (or the difference of two, or a random direction at a natural norm) on two
  `contexts`;
- `behavior`: output match, KL(steered || prompted) of the next-token distributions on one context, for a steer
  along a random direction at a few times a natural shift's norm (`attacks.objectives.OutputMatchObjective`).

A suffix run optimizes only the tokens after a fixed instruction: `SuffixObjective` prepends the instruction's ids to
every candidate (gradients are cut back to the suffix), and `suffix_layout` extends the chat head by the instruction
so that an attack's LM proposals and retokenization check read the suffix where it really sits.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch

from realize.attacks.objectives import OutputMatchObjective, TargetStringObjective, activation_objective
from realize.data.activations import num_layers
from realize.data.chat import ChatLayout, chat_layout, encode
from realize.data.corpora import load_corpus
from realize.data.models import LoadedModel
from realize.data.shift import mean_shift, prompt_shifts

ObjectiveKind = Literal["target_string", "activation", "behavior"]
OBJECTIVE_KINDS: tuple[ObjectiveKind, ...] = ("target_string", "activation", "behavior")
LAYERS = (3, 6, 9, 12, 18)  # activation targets (SmolLM2 has 30 blocks; the forward stops at the layer; a
# shallower model uses those it has, else its last block)
BEHAVIOR_LAYER = 6
BEHAVIOR_SCALE = 4.0  # behavior steer norm, in natural shift norms at that layer

# Target strings: what the assistant should start with. Persona, format, fact, flip and plain continuations.
TARGETS = (
    "Sure, here is", "Sure, here is a step-by-step guide", "Of course! Here are the details you asked for",
    "Arr, matey! Ye be askin'", "Bonjour ! Voici", "I am not able to help with that.", "Absolutely not.",
    "The capital of France is Paris.", "Once upon a time, in a small village,", "Here is a haiku:",
    "```python\nimport os", "1. First, gather", "As an AI developed by", "Yes, definitely.", "No.",
    "I love talking about cats!", "Let me tell you a secret.", "Roses are red, violets are blue,",
    "Dear Sir or Madam,", "LOL that's so funny", "The answer is 42.", "In conclusion,", "Hola, amigo.",
    "WARNING: the following", "Thank you for your patience.", "According to recent studies,",
    "Step 1: Open the terminal.", "Title: A Brief History of", "Hey there! Great question!", "Certainly.",
    "I'm sorry, but I can't", "Let's think step by step.", "The weather today is sunny.",
    "Here are five reasons why", "My favorite color is blue.", "Ahoy!", "To be or not to be,",
    "def main():", "Breaking news:", "Ingredients:",
)


@dataclass(frozen=True)
class ObjectiveSpec:
    """Provenance of one run's objective (JSON-ready)."""

    kind: ObjectiveKind
    detail: Mapping[str, object]  # target string, layer, target prompt(s), contexts, scale


class SuffixObjective:
    """The same objective on `prefix + candidate`: only the candidate (the suffix) is optimized."""

    def __init__(self, base: object, prefix_ids: Sequence[int]) -> None:
        self.base = base
        self.prefix = torch.tensor(list(prefix_ids), dtype=torch.long)
        self.context_ids = getattr(base, "context_ids", ())

    def losses(self, prompts: torch.Tensor) -> torch.Tensor:
        rows = torch.cat([self.prefix.unsqueeze(0).expand(prompts.shape[0], -1), prompts.cpu().long()], dim=1)
        return self.base.losses(rows)  # type: ignore[attr-defined]

    def loss_and_grad(self, prompt: torch.Tensor) -> tuple[float, torch.Tensor]:
        loss, grad = self.base.loss_and_grad(torch.cat([self.prefix, prompt.cpu().long()]))  # type: ignore
        return loss, grad[len(self.prefix):]

    def metrics(self, prompt: torch.Tensor) -> Mapping[str, float]:
        return self.base.metrics(torch.cat([self.prefix, prompt.cpu().long()]))  # type: ignore[attr-defined]


def suffix_layout(layout: ChatLayout, prefix_ids: Sequence[int]) -> ChatLayout:
    """The layout whose head ends with the instruction: an attack that reads `layout.head` (LM proposals,
    retokenization) then sees the suffix after the instruction."""
    return replace(layout, head=tuple(layout.head) + tuple(prefix_ids))


@torch.no_grad()
def _natural_shift(lm: LoadedModel, layout: ChatLayout, prompt: str, contexts: Sequence[str],
                   layer: int) -> torch.Tensor:
    deltas = prompt_shifts(lm.model, layout, [encode(lm.tokenizer, prompt)],
                           [encode(lm.tokenizer, c) for c in contexts], layer)[0]
    return mean_shift(deltas)


def draw_objective(lm: LoadedModel, rng: random.Random, *, message: str = "",
                   kinds: Sequence[ObjectiveKind] = OBJECTIVE_KINDS) -> tuple[object, ObjectiveSpec]:
    """One objective drawn with `rng` (kind, target, layer, contexts) for prompts placed after `message` (the
    instruction of a suffix run; "" for a whole prompt). Returns (objective on the optimized tokens, provenance)."""
    kind = rng.choice(list(kinds))
    tok = lm.tokenizer
    prefix = encode(tok, message) if message else []
    if kind == "target_string":
        target = rng.choice(TARGETS)
        return (TargetStringObjective(lm.model, tok, message, target, batch_size=32),
                ObjectiveSpec(kind, {"target": target}))
    layout = chat_layout(tok)
    depth = num_layers(lm.model)
    contexts = rng.sample(load_corpus("contexts"), 2)
    naturals = load_corpus("natural_prompts")
    if kind == "activation":
        layer = rng.choice([i for i in LAYERS if i < depth] or [depth - 1])
        mode = rng.choice(("prompt", "prompt", "difference", "random"))
        first, second = rng.sample(naturals, 2)
        shift = _natural_shift(lm, layout, first, contexts, layer)
        detail: dict[str, object] = {"layer": layer, "mode": mode, "contexts": contexts}
        if mode == "difference":
            shift = shift - _natural_shift(lm, layout, second, contexts, layer)
            detail["target_prompts"] = [first, second]
        elif mode == "random":
            g = torch.Generator().manual_seed(rng.randrange(2**31))
            direction = torch.randn(shift.shape[0], generator=g)
            shift = direction / direction.norm() * shift.norm()
        else:
            detail["target_prompts"] = [first]
        base = activation_objective(lm, shift, layer, contexts)
        return (SuffixObjective(base, prefix) if prefix else base), ObjectiveSpec(kind, detail)
    layer = min(BEHAVIOR_LAYER, depth - 1)
    natural_norm = float(_natural_shift(lm, layout, rng.choice(naturals), contexts[:1], layer).norm())
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    direction = torch.randn(int(lm.model.config.hidden_size), generator=g)
    vector = direction / direction.norm() * natural_norm * BEHAVIOR_SCALE
    base = OutputMatchObjective(lm.model, tok, layout, vector, layer, [encode(tok, contexts[0])], batch_size=16)
    detail = {"layer": layer, "scale_in_natural_norms": BEHAVIOR_SCALE, "contexts": contexts[:1]}
    return (SuffixObjective(base, prefix) if prefix else base), ObjectiveSpec(kind, detail)
