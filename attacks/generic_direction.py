"""The generic "a prompt is present" direction g at one or several layers: the mean shift of content-free prompts
("I have a question.") on the same contexts. Every instruction moves the residual stream along g, so the specific
cosine projects both vectors orthogonal to it (shared/README "Specificity").

    estimate_generics(lm, layout, layers, contexts, prompts=None) -> {layer: (d,)}   # one forward for all layers
    estimate_generic(lm, layout, layer, contexts, prompts=None) -> (d,)

Re-exported by `realize.attacks.objectives`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from realize.data.chat import ChatLayout, encode
from realize.data.errors import UserInputError
from realize.data.models import LoadedModel


def estimate_generics(
    lm: LoadedModel,
    layout: ChatLayout,
    layers: Sequence[int],
    contexts: Sequence[str],
    prompts: Sequence[str] | None = None,
) -> dict[int, torch.Tensor]:
    """{layer: g (d,)}: mean shift of generic natural prompts (default: the shipped `generic_prompts` corpus) on
    these contexts at each layer — the quantity `data.shift.generic_direction` defines (equal to it within float
    error; a test checks), all layers from one early-exit, KV-reusing forward, prompts batched by token length."""
    if prompts is None:
        from realize.data.corpora import load_corpus  # written in parallel; imported late

        prompts = load_corpus("generic_prompts")
    from realize.attacks.objectives import ActivationShiftObjective  # objectives re-exports this module

    tok = lm.tokenizer
    ids = [encode(tok, p) for p in prompts]
    if not [i for i in ids if i] or not contexts or not layers:
        raise UserInputError("generic direction: expected at least one generic prompt, context and layer")
    probe = ActivationShiftObjective(lm.model, tok, layout, {i: torch.ones(lm.hidden_size) for i in layers}, None,
                                     [encode(tok, c) for c in contexts])
    by_length: dict[int, list[list[int]]] = {}
    for row in ids:
        if row:
            by_length.setdefault(len(row), []).append(row)
    shifts: dict[int, list[torch.Tensor]] = {i: [] for i in probe.layers}
    with torch.no_grad():
        for rows in by_length.values():
            for i, d in probe.per_context_shifts_by_layer(torch.tensor(rows)).items():
                shifts[i].append(d.mean(dim=1))  # (B, d)
    return {i: torch.cat(s).mean(dim=0).cpu() for i, s in shifts.items()}


def estimate_generic(
    lm: LoadedModel,
    layout: ChatLayout,
    layer: int,
    contexts: Sequence[str],
    prompts: Sequence[str] | None = None,
) -> torch.Tensor:
    """g (d,) at one layer (see `estimate_generics`)."""
    return estimate_generics(lm, layout, (layer,), contexts, prompts)[layer]
