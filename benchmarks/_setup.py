"""Shared set-up of the benchmark scripts (imported as a sibling module; run the scripts from the repo root).

One problem = model + layer + target shift + optimization/held-out contexts + generic direction g:
- `natural`: the mean shift, on the optimization contexts, of a natural prompt placed as a prefix;
- `random`: a random direction of the same norm (seeded), the null control.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from realize.attacks.fluency import HeadState, encode_head, lm_head_ids, prompt_ce
from realize.attacks.objectives import ActivationShiftObjective, activation_objective, estimate_generic
from realize.data.chat import ChatLayout, chat_layout, encode
from realize.data.corpora import load_corpus, split_contexts
from realize.data.models import LoadedModel, load_model
from realize.data.shift import mean_shift, prompt_shifts

NATURAL_PROMPT = "Explain it like I am five years old."


@dataclass(frozen=True)
class Problem:
    lm: LoadedModel
    layout: ChatLayout
    layer: int
    kind: str  # "natural" | "random"
    target: torch.Tensor  # a*v (d,)
    objective: ActivationShiftObjective  # optimization contexts
    heldout: ActivationShiftObjective  # held-out contexts (for reports only)
    head: HeadState  # for perplexity

    def report(self, ids: tuple[int, ...] | list[int]) -> dict[str, object]:
        """Held-out raw/specific cosine, norm ratio and perplexity of one prompt."""
        prompt = torch.tensor(list(ids), dtype=torch.long)
        held = self.heldout.metrics(prompt)
        ce = float(prompt_ce(self.lm.model, self.head, prompt.unsqueeze(0))[0])
        return {
            "prompt": self.lm.tokenizer.decode(list(ids)), "ids": list(ids), "heldout_cos": held["cos"],
            "heldout_specific_cos": held.get("specific_cos"), "norm_ratio": held["norm_ratio"],
            "opt_loss": float(self.objective.losses(prompt.unsqueeze(0))[0]), "perplexity": math.exp(ce),
        }


def build(kind: str, *, layer: int = 12, n_opt: int = 8, n_heldout: int = 16, seed: int = 0,
          lm: LoadedModel | None = None, prompt: str = NATURAL_PROMPT) -> Problem:
    lm = lm or load_model()
    tok = lm.tokenizer
    opt, held = split_contexts(load_corpus("contexts"), n_heldout, seed=seed)
    opt = opt[:n_opt]
    layout = chat_layout(tok)
    generic = estimate_generic(lm, layout, layer, opt)
    shift = mean_shift(prompt_shifts(lm.model, layout, [encode(tok, prompt)], [encode(tok, c) for c in opt], layer)[0])
    if kind == "random":
        direction = torch.randn(shift.shape[0], generator=torch.Generator().manual_seed(seed))
        target = direction / direction.norm() * shift.norm()
    elif kind == "natural":
        target = shift
    else:
        raise ValueError(f"kind: expected 'natural' or 'random', got {kind!r}")
    return Problem(
        lm, layout, layer, kind, target, activation_objective(lm, target, layer, opt, generic=generic),
        activation_objective(lm, target, layer, held, generic=generic), encode_head(lm.model, lm_head_ids(layout)),
    )


def machine() -> dict[str, object]:
    return {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}


def write_json(path: str, payload: dict[str, object]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {path}")
