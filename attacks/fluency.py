"""Fluency of a prompt: the cross-entropy of its tokens under the LM, in the prompt's real position.

The prompt is the start of the user's message, so the LM reads the chat template's head first (for the `system`
placement, the head up to the system content) and then predicts each prompt token:

    CE(p) = -1/L * sum_j log P(p_j | head, p_<j)        perplexity = exp(CE)

The head is the same for every candidate, so its keys/values are computed once (`encode_head`) and broadcast over
each batch of candidates; only the prompt tokens run through the model (all blocks, final norm and LM head).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

from realize.attacks.embeddings import one_hot_embeds
from realize.attacks.prompt_cache import expand_kv
from realize.data.chat import ChatLayout


@dataclass(frozen=True)
class HeadState:
    """The template head run through the LM once: per-block (keys, values), each (1, heads, T_head, d_head), and
    the log-probabilities of the first prompt token, (V,)."""

    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    first_logprobs: torch.Tensor
    length: int


def lm_head_ids(layout: ChatLayout) -> tuple[int, ...]:
    """The tokens the LM has read when it writes the prompt's first token. For the `suffix` placement the real
    position follows a context; fluency is a property of the prompt, so it is scored at the start of the user turn
    there too (one head for all contexts)."""
    return layout.sys_head if layout.placement == "system" else layout.head


@torch.no_grad()
def encode_head(model: nn.Module, head_ids: Sequence[int]) -> HeadState:
    """Run the head once; keep its cache and the next-token distribution after it."""
    if not head_ids:
        raise ValueError("head_ids: expected at least one token (the chat template's head)")
    cache = DynamicCache()
    ids = torch.tensor([list(head_ids)], dtype=torch.long, device=next(model.parameters()).device)
    logits = model(input_ids=ids, cache=cache, use_cache=True).logits[0, -1]
    kv = tuple((layer.keys, layer.values) for layer in cache.layers)
    return HeadState(kv=kv, first_logprobs=torch.log_softmax(logits.float(), dim=-1), length=len(head_ids))


def _cache_for(head: HeadState, batch: int) -> DynamicCache:
    """A fresh cache holding the head's keys/values broadcast to `batch` rows (the caller's copy is untouched)."""
    return DynamicCache(ddp_cache_data=list(expand_kv(head.kv, batch)))


def next_token_logprobs(model: nn.Module, head: HeadState, prompts: torch.Tensor) -> torch.Tensor:
    """prompts (B, L) long -> (B, L + 1, V) float: row j is log P(. | head, p_<j); the last row is the distribution
    of the token after the whole prompt. Differentiable when called under grad with `inputs_embeds`-free ids."""
    prompts = prompts.to(head.first_logprobs.device)
    batch = prompts.shape[0]
    first = head.first_logprobs.unsqueeze(0).expand(batch, 1, -1)
    if prompts.shape[1] == 0:
        return first
    positions = torch.arange(head.length, head.length + prompts.shape[1], device=prompts.device)
    positions = positions.unsqueeze(0).expand(batch, -1)
    out = model(input_ids=prompts, cache=_cache_for(head, batch), use_cache=True, position_ids=positions)
    return torch.cat([first, torch.log_softmax(out.logits.float(), dim=-1)], dim=1)


@torch.no_grad()
def prompt_surprisal(model: nn.Module, head: HeadState, prompts: torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
    """prompts (B, L) long, L >= 1 -> (B, L) float: -log P(p_j | head, p_<j) of every prompt token, in nats."""
    if prompts.ndim != 2 or prompts.shape[1] == 0:
        raise ValueError(f"prompts: expected shape (B, L) with L >= 1, got {tuple(prompts.shape)}")
    out = []
    for start in range(0, prompts.shape[0], batch_size):
        chunk = prompts[start : start + batch_size].to(head.first_logprobs.device)
        logprobs = next_token_logprobs(model, head, chunk[:, :-1])  # (b, L, V): position j predicts p_j
        out.append(-logprobs.gather(-1, chunk.unsqueeze(-1)).squeeze(-1))
    return torch.cat(out).cpu()


@torch.no_grad()
def prompt_ce(model: nn.Module, head: HeadState, prompts: torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
    """prompts (B, L) long, L >= 1 -> mean negative log-prob of the prompt tokens, (B,) float."""
    return prompt_surprisal(model, head, prompts, batch_size=batch_size).mean(dim=1)


def prompt_ce_and_grad(
    model: nn.Module, head: HeadState, prompt: torch.Tensor
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """prompt (L,) long -> (CE, gradient of CE w.r.t. the one-hot prompt (L, V), next-token log-probs (L, V)),
    tensors on the CPU.

    Row j of the log-probs is log P(. | head, p_<j), the LM's proposal for position j (no gradient).

    The one-hot enters twice: as the model's input (through the embedding matrix) and as the label being scored,
    so the gradient at position j includes -log P(v | head, p_<j) / L for every token v (EPO's "what would the LM
    write here" signal)."""
    with torch.enable_grad():
        one_hot, embeds = one_hot_embeds(model, prompt)  # (L, V) requiring grad, (1, L, d)
        length = prompt.shape[0]
        rows = [head.first_logprobs.unsqueeze(0)]
        if length > 1:
            positions = torch.arange(head.length, head.length + length - 1, device=one_hot.device).unsqueeze(0)
            out = model(inputs_embeds=embeds[:, :-1], cache=_cache_for(head, 1), use_cache=True, position_ids=positions)
            rows.append(torch.log_softmax(out.logits[0].float(), dim=-1))
        logprobs = torch.cat(rows, dim=0)  # (L, V)
        ce = -(one_hot * logprobs).sum() / length
        (grad,) = torch.autograd.grad(ce, one_hot)
    return float(ce.item()), grad.cpu(), logprobs.detach().cpu()
