"""Activation shift of a prompt on base contexts, and how well it matches a steering target.

Definition (shared/README): for contexts c_1..c_K and a prompt p placed in the user turn, the shift on context k is
`D_k = mean_j [h_i(p + c_k)[j] - h_i(c_k)[j]]` over the aligned positions j (c_k's own tokens and the assistant
header, see `data.chat`). The target is `a * v`.

Specific cosine: natural prompts share one generic "an instruction is present" direction g (the mean shift of
generic prompts such as "I have a question."). Both vectors are projected orthogonal to g before the cosine, so a
prompt must match the *specific* part of the target, not just announce that some instruction is present.

This module is for evaluation (many prompts, no gradients); attacks have their own batched, early-exit hot loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from realize.data.chat import ChatLayout, PlacedInput
from realize.data.prefix_reuse import block_outputs_after_prefix


@dataclass(frozen=True)
class ShiftMetrics:
    """How well a prompt's shift matches a target (all floats; higher cos is better)."""

    cos: float  # raw cosine of the mean shift (over contexts) with the target
    specific_cos: float | None  # the same with both projected orthogonal to g; None without g
    per_position_cos: float  # mean over contexts and aligned positions of cos(delta_kj, target)
    norm_ratio: float  # |mean shift| / |target|
    per_context_cos: tuple[float, ...]  # cos(D_k, target) per context


def project_out(x: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """x (..., d) with its component along `direction` (d,) removed."""
    unit = direction / direction.norm().clamp_min(1e-12)
    return x - (x @ unit).unsqueeze(-1) * unit


def specific_cosine(shift: torch.Tensor, target: torch.Tensor, generic: torch.Tensor) -> float:
    """Cosine of shift and target (d,) after removing g from both. A shift with (almost) nothing left off g scores
    ~0: norms are floored at 1e-3 of the unprojected norm, so float noise cannot make a cosine."""
    a, b = project_out(shift.float(), generic.float()), project_out(target.float(), generic.float())
    floor_a, floor_b = 1e-3 * shift.norm().item(), 1e-3 * target.norm().item()
    denom = max(a.norm().item(), floor_a, 1e-12) * max(b.norm().item(), floor_b, 1e-12)
    return float(torch.dot(a, b).item() / denom)


def pad_right(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T) and attention mask (B, T); right padding keeps positions 0..n-1 for each row."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[b, : len(row)] = 1
    return ids, mask


@torch.no_grad()
def aligned_activations_at(
    model: nn.Module,
    layout: ChatLayout,
    prompt: Sequence[int] | None,
    contexts: Sequence[Sequence[int]],
    layers: Sequence[int],
    *,
    pad_id: int = 0,
    batch_size: int = 32,
) -> dict[int, list[torch.Tensor]]:
    """Per layer, the block outputs at the aligned positions, one (n_k, d) tensor per context (one forward for all
    layers, stopped after the deepest)."""
    placed = [layout.place(prompt, ctx) for ctx in contexts]
    out: dict[int, list[torch.Tensor]] = {i: [] for i in layers}
    for start in range(0, len(placed), batch_size):
        chunk = placed[start : start + batch_size]
        shared, hidden = _after_shared_prefix(model, chunk, layers, pad_id)
        for i in layers:
            out[i].extend(hidden[i][b, [a - shared for a in p.aligned]].float() for b, p in enumerate(chunk))
    return out


def _after_shared_prefix(model: nn.Module, placed: Sequence[PlacedInput], layers: Sequence[int],
                         pad_id: int) -> tuple[int, dict[int, torch.Tensor]]:
    """`data.prefix_reuse.block_outputs_after_prefix` of placed inputs, sharing at most the tokens before their
    first aligned position (aligned positions are always computed in the batch)."""
    limit = min(min(p.aligned) for p in placed)
    return block_outputs_after_prefix(model, [p.ids for p in placed], layers, pad_id=pad_id, limit=limit)


def aligned_activations(model: nn.Module, layout: ChatLayout, prompt: Sequence[int] | None,
                        contexts: Sequence[Sequence[int]], layer: int, *, pad_id: int = 0,
                        batch_size: int = 32) -> list[torch.Tensor]:
    """Block `layer` outputs at the aligned positions, one (n_k, d) tensor per context."""
    return aligned_activations_at(model, layout, prompt, contexts, [layer], pad_id=pad_id, batch_size=batch_size)[layer]


@torch.no_grad()
def prompt_shifts_at(
    model: nn.Module,
    layout: ChatLayout,
    prompts: Sequence[Sequence[int]],
    contexts: Sequence[Sequence[int]],
    layers: Sequence[int],
    *,
    base: Mapping[int, Sequence[torch.Tensor]] | None = None,
    pad_id: int = 0,
    batch_size: int = 32,
) -> dict[int, list[list[torch.Tensor]]]:
    """Per layer, per-position deltas for many prompts: result[i][p][k] is (n_k, d) = h_i(prompt p + c_k) - h_i(c_k)
    at the aligned positions (one forward per batch for all layers). `base` (from `aligned_activations_at(...,
    prompt=None)`) is computed when not given."""
    if base is None:
        base = aligned_activations_at(model, layout, None, contexts, layers, pad_id=pad_id, batch_size=batch_size)
    result = {i: [[torch.empty(0)] * len(contexts) for _ in prompts] for i in layers}
    for p, prompt in enumerate(prompts):  # one prompt's rows per batch: they share the template head and the prompt
        for start in range(0, len(contexts), batch_size):
            ks = range(start, min(start + batch_size, len(contexts)))
            placed = [layout.place(prompt, contexts[k]) for k in ks]
            shared, hidden = _after_shared_prefix(model, placed, layers, pad_id)
            for i in layers:
                for b, (k, x) in enumerate(zip(ks, placed, strict=True)):
                    result[i][p][k] = x.zero_unreachable(
                        hidden[i][b, [a - shared for a in x.aligned]].float() - base[i][k])
    return result


def prompt_shifts(
    model: nn.Module,
    layout: ChatLayout,
    prompts: Sequence[Sequence[int]],
    contexts: Sequence[Sequence[int]],
    layer: int,
    *,
    base: Sequence[torch.Tensor] | None = None,
    pad_id: int = 0,
    batch_size: int = 32,
) -> list[list[torch.Tensor]]:
    """Per-position deltas for many prompts: result[p][k] is (n_k, d) = h(prompt p + c_k) - h(c_k) at the aligned
    positions. `base` (from `aligned_activations(..., prompt=None)`) is computed when not given."""
    return prompt_shifts_at(model, layout, prompts, contexts, [layer], base=None if base is None else {layer: base},
                            pad_id=pad_id, batch_size=batch_size)[layer]


def mean_shift(deltas: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over contexts of the per-context mean over positions: (d,)."""
    return torch.stack([d.mean(dim=0) for d in deltas]).mean(dim=0)


def shift_metrics(
    deltas: Sequence[torch.Tensor], target: torch.Tensor, generic: torch.Tensor | None = None
) -> ShiftMetrics:
    """Compare per-context deltas [(n_k, d)] with the target `a * v` (d,); g = `generic` (d,) if given."""
    target = target.float()
    per_context = torch.stack([d.mean(dim=0) for d in deltas])  # (K, d)
    mean = per_context.mean(dim=0)
    cos = F.cosine_similarity(mean, target, dim=0).item()
    specific = None if generic is None else specific_cosine(mean, target, generic)
    positions = torch.cat(list(deltas), dim=0)
    per_position = F.cosine_similarity(positions, target.unsqueeze(0), dim=-1).mean().item()
    ratio = (mean.norm() / target.norm().clamp_min(1e-12)).item()
    per_ctx = F.cosine_similarity(per_context, target.unsqueeze(0), dim=-1)
    return ShiftMetrics(cos, specific, per_position, ratio, tuple(per_ctx.tolist()))


def generic_direction(
    model: nn.Module,
    layout: ChatLayout,
    generic_prompts: Sequence[Sequence[int]],
    contexts: Sequence[Sequence[int]],
    layer: int,
    *,
    pad_id: int = 0,
    batch_size: int = 32,
) -> torch.Tensor:
    """g (d,): the mean shift of generic natural prompts ("I have a question.") on these contexts."""
    shifts = prompt_shifts(model, layout, generic_prompts, contexts, layer, pad_id=pad_id, batch_size=batch_size)
    return torch.stack([mean_shift(s) for s in shifts]).mean(dim=0)
