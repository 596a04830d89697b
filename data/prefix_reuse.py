"""Forward many rows that start with the same tokens: the shared prefix runs once, the rest reuses its KV.

    shared_prefix_len(rows, limit) -> P                  # longest common prefix of `rows`, at most `limit`
    block_outputs_after_prefix(model, rows, layers, *, pad_id, limit) -> (P, {layer: (B, W, d)})

Scoring one prompt on K contexts places it as `head + prompt + sep + context_k + tail (+ continuation)`: the first
~half of every row is the same. Here that prefix (P tokens) runs once as one row through the blocks up to the
deepest of `layers`; its keys and values are broadcast to the K rows, and only the K suffixes (right-padded to W,
positions P..P+W-1) run. Each suffix token attends to the prefix and to its own row causally, so it computes what
the full row computes (to float rounding: the attention sums are split differently).
The forward is `data.activations.block_outputs` (the project's early-exit forward); the caller's model is never
modified.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import DynamicCache

from realize.data.activations import block_outputs

__all__ = ["block_outputs_after_prefix", "shared_prefix_len"]


def shared_prefix_len(rows: Sequence[Sequence[int]], limit: int) -> int:
    """The length of the longest prefix every row shares, capped at `limit` (>= 0)."""
    if not rows:
        return 0
    first = rows[0]
    n = min(limit, *(len(r) for r in rows))
    for row in rows[1:]:
        i = 0
        while i < n and row[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


@torch.no_grad()
def block_outputs_after_prefix(model: nn.Module, rows: Sequence[Sequence[int]], layers: Sequence[int], *,
                               pad_id: int, limit: int) -> tuple[int, dict[int, torch.Tensor]]:
    """(P, {layer: raw block output (B, W, d)}) for the tokens of each row after the rows' shared prefix of P <=
    `limit` tokens (row b's token t >= P is at [b, t - P]; positions past a row's end are padding). With P = 0 this
    is one right-padded forward of the whole rows."""
    device = next(model.parameters()).device
    shared = shared_prefix_len(rows, limit)
    tails = [list(r[shared:]) for r in rows]
    width = max(len(t) for t in tails)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    for b, tail in enumerate(tails):
        ids[b, : len(tail)] = torch.tensor(tail, dtype=torch.long)
        mask[b, shared : shared + len(tail)] = 1
    if shared == 0:
        return 0, block_outputs(model, list(layers), input_ids=ids.to(device), attention_mask=mask.to(device))
    prefix_cache = DynamicCache(config=model.config)
    block_outputs(model, list(layers), input_ids=torch.tensor([list(rows[0][:shared])], device=device),
                  cache=prefix_cache)
    deepest = max(layers)
    kv = [(prefix_cache.layers[i].keys.expand(len(rows), -1, -1, -1),
           prefix_cache.layers[i].values.expand(len(rows), -1, -1, -1)) for i in range(deepest + 1)]
    cache = DynamicCache(ddp_cache_data=kv)
    positions = torch.arange(shared, shared + width, device=device).expand(len(rows), -1)
    hidden = block_outputs(model, list(layers), input_ids=ids.to(device), attention_mask=mask.to(device),
                           position_ids=positions, cache=cache)
    return shared, hidden
