"""KV reuse for scoring many candidate prompts on many contexts, stopping the forward at one block.

Public API (stable):

    KV = tuple[tuple[Tensor, Tensor], ...]           # per block 0..layer: (keys, values), each (B, heads, T, head_dim)
    run_to_layer(model, layer, *, input_ids=None, inputs_embeds=None, attention_mask=None, position_ids=None,
                 past=None) -> (hidden (B, T, d) = raw output of block `layer`, KV of blocks 0..layer, past + new)
    run_to_layers(model, layers, *, ...same keywords...) -> ({layer: hidden (B, T, d)}, KV of blocks 0..max(layers))
    packed_mask(past_len, lengths, dtype, device) -> (1, 1, T, past_len + T) additive mask for packed segments
    expand_kv(kv, batch) -> KV                       # broadcast a batch-1 KV to `batch` rows (no copy)
    repeat_kv_rows(kv, times) -> KV                  # (B, ...) -> (B*times, ...), each row repeated `times` in a row
    Segments(pre, post, post_aligned, n_pre_aligned) # one context's input around the prompt slot
    segments(layout, context_ids) -> Segments
    prefix_groups(model, layout, contexts, layer, device) -> [(context indices, their Segments, KV of the shared pre)]

How an input decomposes (see `data.chat`): every placement is `pre + prompt + post`, where
    prefix: pre = head,           post = sep + context + tail   (aligned = context + tail, all in post)
    system: pre = sys_head,       post = sys_tail + context + tail
    suffix: pre = head + context + sep, post = tail            (aligned = context (in pre) + tail (in post))
Aligned positions inside `pre` precede the prompt, so causally their activation equals the base input's: their
delta is exactly 0 and is not recomputed. Scoring B candidates on K contexts then costs: `pre` once per distinct
`pre` (once in total for prefix/system), the prompt's L tokens once per candidate (shared by the K contexts), and
only `post` per (candidate, context). The K posts of one candidate are *packed* into one row (no padding, no copy
of the prompt's KV per context): a 4D mask lets each segment see the shared past and itself only, and position
ids restart after the prompt for every segment, so each segment computes exactly what its own input would.

The forward is the project's one early-exit forward, `data.activations.block_outputs` (the model's own modules; a
hook on block `layer` raises, so later blocks, the final norm and the LM head never run), with a transformers
`DynamicCache` rebuilt from plain tensors for every call; the caller's model is never modified (the hook is
removed in `finally`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

from realize.data.activations import block_outputs
from realize.data.chat import ChatLayout

KV = tuple[tuple[torch.Tensor, torch.Tensor], ...]


def run_to_layers(
    model: nn.Module,
    layers: Sequence[int],
    *,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    past: KV | None = None,
) -> tuple[dict[int, torch.Tensor], KV]:
    """Run new tokens (B, T) after an optional cached `past` (B rows, P tokens) up to the deepest of `layers`.

    attention_mask is None (causal), (B, P + T) with 1 for real tokens (right padding), or a prepared 4D additive
    mask (B or 1, 1, T, P + T) that transformers passes through as is; position_ids (B or 1, T) default to
    P..P+T-1. Returns the raw output of every block in `layers` for the new tokens ({layer: (B, T, d)}) and the
    KV of blocks 0..max(layers) for all P + T tokens. Gradients flow through inputs_embeds and through `past`.
    The forward is `data.activations.block_outputs` (later blocks, the final norm and the LM head never run)
    with a fresh `DynamicCache` holding `past`.
    """
    deepest = max(layers)
    cache = DynamicCache(ddp_cache_data=list(past)) if past else DynamicCache(config=model.config)
    hidden = block_outputs(model, list(layers), input_ids=input_ids, inputs_embeds=inputs_embeds,
                           attention_mask=attention_mask, position_ids=position_ids, cache=cache)
    kv = tuple((cache.layers[i].keys, cache.layers[i].values) for i in range(deepest + 1))
    return hidden, kv


def run_to_layer(
    model: nn.Module,
    layer: int,
    *,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    past: KV | None = None,
) -> tuple[torch.Tensor, KV]:
    """`run_to_layers` for one block: (raw output of block `layer` for the new tokens (B, T, d), KV of blocks
    0..layer for all P + T tokens)."""
    hidden, kv = run_to_layers(model, (layer,), input_ids=input_ids, inputs_embeds=inputs_embeds,
                               attention_mask=attention_mask, position_ids=position_ids, past=past)
    return hidden[layer], kv


def packed_mask(past_len: int, lengths: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive 4D mask (1, 1, T, past_len + T), T = sum(lengths), for segments packed in one row: every token
    sees the whole past and, causally, the tokens of its own segment only (0 = attend, dtype min = blocked)."""
    total = sum(lengths)
    allowed = torch.zeros(total, past_len + total, dtype=torch.bool, device=device)
    allowed[:, :past_len] = True
    start = 0
    for n in lengths:
        allowed[start : start + n, past_len + start : past_len + start + n] = torch.ones(
            n, n, dtype=torch.bool, device=device
        ).tril()
        start += n
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask.view(1, 1, total, past_len + total)


def expand_kv(kv: KV, batch: int) -> KV:
    """A batch-1 KV broadcast to `batch` rows (a view; the cache copies it when it appends)."""
    return tuple((k.expand(batch, *k.shape[1:]), v.expand(batch, *v.shape[1:])) for k, v in kv)


def repeat_kv_rows(kv: KV, times: int) -> KV:
    """(B, ...) -> (B * times, ...): row b becomes rows b*times .. b*times + times - 1."""
    return tuple((k.repeat_interleave(times, dim=0), v.repeat_interleave(times, dim=0)) for k, v in kv)


@dataclass(frozen=True)
class Segments:
    """One context's input as `pre + prompt + post` (see module docstring)."""

    pre: tuple[int, ...]  # tokens before the prompt slot
    post: tuple[int, ...]  # tokens after it
    post_aligned: tuple[int, ...]  # aligned positions, as indices into `post`
    n_pre_aligned: int  # aligned positions inside `pre` (their delta is 0 by causality)

    @property
    def n_aligned(self) -> int:
        return self.n_pre_aligned + len(self.post_aligned)


def segments(layout: ChatLayout, context: Sequence[int]) -> Segments:
    """Split `layout.place(prompt, context)` around the prompt slot."""
    ctx = tuple(context)
    if layout.placement == "prefix":
        post = layout.sep + ctx + layout.tail
        return Segments(layout.head, post, tuple(range(len(layout.sep), len(post))), 0)
    if layout.placement == "system":
        post = layout.sys_tail + ctx + layout.tail
        return Segments(layout.sys_head, post, tuple(range(len(layout.sys_tail), len(post))), 0)
    return Segments(layout.head + ctx + layout.sep, layout.tail, tuple(range(len(layout.tail))), len(ctx))


@torch.no_grad()
def prefix_groups(model: nn.Module, layout: ChatLayout, contexts: Sequence[Sequence[int]], layer: int,
                  device: torch.device) -> list[tuple[list[int], list[Segments], KV]]:
    """The contexts grouped by their `pre` (one group for prefix/system placements, one per context for suffix),
    each group with its contexts' indices, their segments and the KV of `pre` through block `layer` (run once)."""
    segs = [segments(layout, c) for c in contexts]
    by_pre: dict[tuple[int, ...], list[int]] = {}
    for k, seg in enumerate(segs):
        by_pre.setdefault(seg.pre, []).append(k)
    out = []
    for pre, ks in by_pre.items():
        _, pre_kv = run_to_layer(model, layer, input_ids=torch.tensor([pre], device=device))
        out.append((ks, [segs[k] for k in ks], pre_kv))
    return out
