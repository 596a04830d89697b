"""Greedy chat generation helpers (used by the CLI's `steer`, the behavior check and reports).

A model without a chat template (a base model) reads the user message as plain text in `data.chat`'s plain layout:
BOS + message + newline, and continues from there."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from realize.data.chat import encode, has_chat_template, plain_layout
from realize.data.models import LoadedModel


def chat_ids(lm: LoadedModel, user_message: str, system: str | None = None) -> list[int]:
    """Token ids of a one-turn chat with the assistant header appended (the plain layout's base input for a model
    without a chat template; a `system` message is refused there)."""
    if not has_chat_template(lm.tokenizer):
        layout = plain_layout(lm.tokenizer, "system" if system else "prefix")
        return list(layout.place(None, encode(lm.tokenizer, user_message)).ids)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user_message}
    ]
    text = lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])


@torch.no_grad()
def generate_ids(lm: LoadedModel, ids: Sequence[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation of `ids` (stops at EOS); returns only the new ids."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected >= 1, got {max_new_tokens}")
    input_ids = torch.tensor([list(ids)])
    out = lm.model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=lm.tokenizer.pad_token_id,
        eos_token_id=lm.tokenizer.eos_token_id,
    )
    return out[0, input_ids.shape[1] :].tolist()


def generate(lm: LoadedModel, user_message: str, max_new_tokens: int = 48) -> str:
    """Greedy reply to one user message, special tokens stripped."""
    new = generate_ids(lm, chat_ids(lm, user_message), max_new_tokens)
    return lm.tokenizer.decode(new, skip_special_tokens=True).strip()
