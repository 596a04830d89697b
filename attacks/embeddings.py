"""Input embeddings as the model computes them, for gradients w.r.t. tokens and for soft prompts.

Public API (stable):

    embed_scale(model) -> float | Tensor            # factor the embedding module applies to rows (Gemma: sqrt(d))
    as_input_embeds(model, rows (..., d)) -> (..., d)  # embedding-matrix rows (or soft rows) -> model input
    one_hot_embeds(model, ids (L,)) -> (one_hot (L, V) requiring grad, embeds (1, L, d))
    one_hot_grad(model, ids (L,), loss_of_embeds) -> (loss, d loss / d one-hot (L, V))   # GCG's token gradient

Some models scale token embeddings inside the embedding module (transformers' Gemma 2/3 `*ScaledWordEmbedding`:
`embed(ids) = E[ids] * embed_scale`). A path that builds `inputs_embeds` from the matrix E itself (a one-hot
product, a soft prompt) must apply the same factor, or it scores a different input than `embed(ids)`; a path that
calls the module (`embed(ids)`) must not apply it again. Every such path in the project goes through this module.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["as_input_embeds", "embed_scale", "one_hot_embeds", "one_hot_grad"]


def embed_scale(model: nn.Module) -> float | torch.Tensor:
    """The factor the model's input-embedding module multiplies rows of its matrix by (1.0 for most models), in
    the matrix's dtype as the module itself applies it."""
    embed = model.get_input_embeddings()
    scale = getattr(embed, "embed_scale", 1.0)
    return scale.to(embed.weight.dtype) if isinstance(scale, torch.Tensor) else scale


def as_input_embeds(model: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """Rows in embedding-matrix space (..., d) -> what the model's embedding module would output for them."""
    return rows * embed_scale(model)


def one_hot_embeds(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (L,) -> (one_hot (L, V) requiring grad, embeddings (1, L, d) = one_hot @ E times `embed_scale`), so
    that the embeddings equal `model.get_input_embeddings()(ids)` and gradients flow to the one-hot."""
    weight = model.get_input_embeddings().weight
    one_hot = torch.zeros(ids.shape[0], weight.shape[0], dtype=weight.dtype, device=weight.device)
    one_hot.scatter_(1, ids.to(weight.device).unsqueeze(1), 1.0)
    one_hot.requires_grad_(True)
    return one_hot, as_input_embeds(model, one_hot @ weight).unsqueeze(0)


def one_hot_grad(
    model: nn.Module, ids: torch.Tensor, loss_of_embeds: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[float, torch.Tensor]:
    """ids (L,) -> (loss, gradient of the loss w.r.t. the one-hot prompt, (L, V)), where `loss_of_embeds` maps the
    prompt's input embeddings (1, L, d) (from `one_hot_embeds`) to a scalar loss. Runs with gradients enabled."""
    with torch.enable_grad():
        one_hot, embeds = one_hot_embeds(model, ids)
        loss = loss_of_embeds(embeds)
        (grad,) = torch.autograd.grad(loss, one_hot)
    return float(loss.item()), grad.detach()
