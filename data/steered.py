"""What a steering vector makes the model do, computed once per vector and context: the steered model's greedy
continuation y and the next-token distributions of the steered and the base model along it.

Everything on the behavior axis compares a prompted model with these (`realize.attacks.behavior_objective` searches
on them, `realize.scorers.behavior` judges with them), so they are computed once per (vector, context) and shared.

For a base input x (the context in the chat turn, `layout.place(None, c)`) and y = greedy(steered, x), T tokens
(cut after the first EOS), row t of `steered` / `base` is log P(. | x, y_<t) under the steered / base model: the
distribution of y_t. Memory: 2 * T * V floats per context (SmolLM2, T = 24: ~9 MB).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from realize.data.activations import decoder_layers, steer
from realize.data.chat import ChatLayout, encode
from realize.data.models import LoadedModel, pad_id
from realize.data.prefix_reuse import block_outputs_after_prefix


@dataclass(frozen=True, eq=False)
class SteeredContext:
    context: str
    context_ids: tuple[int, ...]  # the context's own tokens (what goes into `layout.place`)
    base_ids: tuple[int, ...]  # x = layout.place(None, context_ids).ids
    continuation: tuple[int, ...]  # y, T >= 1 tokens
    steered: torch.Tensor  # (T, V) float32 log-probs of the steered model predicting y_t
    base: torch.Tensor  # (T, V) float32 log-probs of the base model predicting y_t

    @property
    def effect(self) -> torch.Tensor:
        """(T,) KL(steered_t || base_t) in nats: how much the vector changes each next-token distribution."""
        return (self.steered.exp() * (self.steered - self.base)).sum(-1).clamp_min(0.0)


@torch.no_grad()
def greedy_batch(lm: LoadedModel, rows: Sequence[Sequence[int]], max_new_tokens: int,
                 batch_size: int = 16) -> list[list[int]]:
    """Greedy continuations of each row (left-padded batches); each is cut after its first EOS."""
    pad, eos = pad_id(lm.tokenizer), lm.tokenizer.eos_token_id
    device = next(lm.model.parameters()).device
    out: list[list[int]] = []
    for start in range(0, len(rows), batch_size):
        chunk = [list(r) for r in rows[start : start + batch_size]]
        width = max(len(r) for r in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, r in enumerate(chunk):
            ids[b, width - len(r) :] = torch.tensor(r)
            mask[b, width - len(r) :] = 1
        gen = lm.model.generate(ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                                do_sample=False, pad_token_id=pad, eos_token_id=eos)[:, width:]
        for row in gen.tolist():
            cut = row.index(eos) + 1 if eos is not None and eos in row else len(row)
            out.append(row[:cut])
    return out


@torch.no_grad()
def forced_logprobs(lm: LoadedModel, inputs: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                    batch_size: int = 16) -> list[torch.Tensor]:
    """Next-token log-probs (len(y), V) predicting each continuation y after its input (right-padded batches; the
    prefix a batch's inputs share runs once, `data.prefix_reuse`: pass one prompt's rows together to share it)."""
    pad = pad_id(lm.tokenizer)
    base = getattr(lm.model, "model", lm.model)
    final_norm = getattr(base, "norm", None)
    last = len(decoder_layers(lm.model)) - 1
    out: list[torch.Tensor] = []
    for start in range(0, len(inputs), batch_size):
        pairs = list(zip(inputs[start : start + batch_size], continuations[start : start + batch_size], strict=True))
        rows = [list(x) + list(y) for x, y in pairs]
        if final_norm is None:  # a decoder without a final `norm`: whole rows through the model's own forward
            shared, hidden = 0, _last_hidden(lm, rows, pad)
        else:  # block outputs of the last block after the shared prefix, then the final norm (= last_hidden_state)
            shared, raw = block_outputs_after_prefix(lm.model, rows, [last], pad_id=pad,
                                                     limit=min(len(x) for x, _ in pairs) - 1)
            hidden = final_norm(raw[last])
        index = torch.cat([torch.full((len(y),), b) for b, (_, y) in enumerate(pairs)])
        cols = torch.cat([torch.arange(len(x) - 1 - shared, len(x) - 1 - shared + len(y)) for x, y in pairs])
        logprobs = torch.log_softmax(_head(lm.model, hidden[index, cols]), dim=-1).cpu()
        out.extend(logprobs.split([len(y) for _, y in pairs]))
    return out


def _last_hidden(lm: LoadedModel, rows: Sequence[Sequence[int]], pad: int) -> torch.Tensor:
    """The decoder's final (normed) hidden states (B, T, d) of right-padded rows, without the LM head."""
    device = next(lm.model.parameters()).device
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r)
        mask[b, : len(r)] = 1
    base = getattr(lm.model, "model", lm.model)  # the decoder without the LM head: the head runs only where needed
    return base(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state


def _head(model: torch.nn.Module, normed: torch.Tensor) -> torch.Tensor:
    """Normed last hidden states (..., d) -> logits (..., V) float: the LM head, then soft-capping if configured."""
    logits = model.get_output_embeddings()(normed).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def steered_contexts(lm: LoadedModel, layout: ChatLayout, directions: Mapping[int, torch.Tensor], scale: float,
                     contexts: Sequence[str], max_new_tokens: int, *, batch_size: int = 16) -> list[SteeredContext]:
    """The steered continuation of every context and both models' distributions along it."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected >= 1, got {max_new_tokens}")
    context_ids = [tuple(encode(lm.tokenizer, c)) for c in contexts]
    base_in = [layout.place(None, c).ids for c in context_ids]
    with steer(lm.model, directions, scale):
        ys = greedy_batch(lm, base_in, max_new_tokens, batch_size)
        ys = [y or [lm.tokenizer.eos_token_id or 0] for y in ys]  # a context the steered model ends at once
        steered = forced_logprobs(lm, base_in, ys, batch_size)
    base = forced_logprobs(lm, base_in, ys, batch_size)
    return [SteeredContext(c, ids, tuple(x), tuple(y), s, b)
            for c, ids, x, y, s, b in zip(contexts, context_ids, base_in, ys, steered, base, strict=True)]
