"""Place a candidate prompt into a chat-formatted user turn, token-aligned with the prompt-free base input.

A base context c is a user message; the model input is the chat template around it, ending with the assistant
header. A prompt p is inserted by token segments, never by re-tokenizing a joined string, so c's own tokens and
the assistant header are identical in the prompted and the base input and align position by position:

    prefix: head + p + sep + c + tail          base: head + c + tail
    suffix: head + c + sep + p + tail          base: head + c + tail
    system: sys_head + p + sys_tail + c + tail base: head + c + tail   (p replaces the system message)

`sep` is a newline token, which byte-level BPE tokenizers never merge with the next word, so the segment-wise ids
equal what the joined text tokenizes to in the common case (attacks check that with a retokenization filter).

**Plain layout (a model without a chat template, e.g. a base model such as Gemma-3-270M).** There is no user turn:
the text the model reads is the context itself, with the prompt on its own line before it (prefix) or after it
(suffix), and one newline after the whole text, where an answer would start:

    prefix: head + p + "\n" + c + "\n"        base: head + c + "\n"
    suffix: head + c + "\n" + p + "\n"        base: head + c + "\n"
    system: refused (a base model has no system turn)

`head` is the BOS token when the tokenizer has one (Gemma needs `<bos>` first; a tokenizer that defines a BOS but does
not add it, like GPT-2's `<|endoftext|>`, gets it too, as a document start, so the prompt's first token always has
something to be predicted from), else empty. The trailing newline plays the role of the assistant header: it is
the position where the continuation is decided, so the aligned positions are the context's tokens plus that
newline (CAA's "last tokens" and generation start there too). `chat_layout` returns this layout automatically when
the tokenizer has no chat template (logged once at INFO).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from transformers import PreTrainedTokenizerBase

from realize.data.errors import UserInputError, arg

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Placement = Literal["prefix", "suffix", "system"]
PLACEMENTS: tuple[Placement, ...] = ("prefix", "suffix", "system")
_SENTINEL_USER = "\u2063USER\u2063"
_SENTINEL_SYSTEM = "\u2063SYSTEM\u2063"
SEPARATOR = "\n"
Template = Literal["chat", "plain"]
_plain_logged: set[str] = set()  # tokenizers already reported as using the plain layout


@dataclass(frozen=True)
class PlacedInput:
    """One assembled input: ids (T,), and the positions of the context's tokens and the assistant header
    (`aligned`, same length and order in the prompted and the base input) and of the prompt (`prompt`)."""

    ids: tuple[int, ...]
    aligned: tuple[int, ...]
    prompt: tuple[int, ...]
    unreachable: tuple[int, ...] = ()  # indices into `aligned` of positions before the prompt: their shift is 0

    def zero_unreachable(self, deltas: torch.Tensor) -> torch.Tensor:
        """deltas (..., n_aligned, d) with the rows the prompt cannot reach set to exactly 0 (causality: computed,
        they are float noise, whose cosine with anything is random)."""
        if self.unreachable:
            deltas[..., list(self.unreachable), :] = 0
        return deltas


@dataclass(frozen=True)
class ChatLayout:
    """Token segments of the chat template for one placement (see module docstring)."""

    placement: Placement
    head: tuple[int, ...]  # template up to the user content (default system turn included)
    tail: tuple[int, ...]  # end of the user turn + assistant header
    sep: tuple[int, ...]  # separator between prompt and context
    sys_head: tuple[int, ...] = ()  # system placement: template up to the system content
    sys_tail: tuple[int, ...] = ()  # system placement: end of system turn up to the user content
    template: Template = "chat"  # "plain": the tokenizer has no chat template (see module docstring)

    def place(self, prompt: Sequence[int] | None, context: Sequence[int]) -> PlacedInput:
        """Assemble prompt (None = the base input) and context ids into one input."""
        ctx, tail = tuple(context), self.tail
        if prompt is None:
            ids = self.head + ctx + tail
            start = len(self.head)
            return PlacedInput(ids, tuple(range(start, len(ids))), ())
        p = tuple(prompt)
        if self.placement == "prefix":
            pre = self.head
            ids = pre + p + self.sep + ctx + tail
            ctx_start = len(pre) + len(p) + len(self.sep)
            aligned = tuple(range(ctx_start, len(ids)))
            span = tuple(range(len(pre), len(pre) + len(p)))
        elif self.placement == "suffix":
            ids = self.head + ctx + self.sep + p + tail
            ctx_start = len(self.head)
            p_start = ctx_start + len(ctx) + len(self.sep)
            aligned = tuple(range(ctx_start, ctx_start + len(ctx))) + tuple(range(p_start + len(p), len(ids)))
            span = tuple(range(p_start, p_start + len(p)))
            return PlacedInput(ids, aligned, span, tuple(range(len(ctx))))
        else:
            pre = self.sys_head + p + self.sys_tail
            ids = pre + ctx + tail
            aligned = tuple(range(len(pre), len(ids)))
            span = tuple(range(len(self.sys_head), len(self.sys_head) + len(p)))
        return PlacedInput(ids, aligned, span)

    def render_text(self, tokenizer: PreTrainedTokenizerBase, prompt: str | None, context: str) -> str:
        """The joined text a user would send (for display and retokenization checks)."""
        p_ids = None if prompt is None else encode(tokenizer, prompt)
        return tokenizer.decode(list(self.place(p_ids, encode(tokenizer, context)).ids))


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Ids of `text` with no special tokens added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _split(rendered: str, sentinel: str, what: str) -> tuple[str, str]:
    if rendered.count(sentinel) != 1:
        raise UserInputError(f"tokenizer chat template: cannot locate the {what} content in its output")
    before, after = rendered.split(sentinel)
    return before, after


def chat_layout(tokenizer: PreTrainedTokenizerBase, placement: Placement = "prefix") -> ChatLayout:
    """Build the token segments of `tokenizer`'s chat template for `placement`."""
    if placement not in PLACEMENTS:
        raise UserInputError(f"{arg('placement')} {placement}: expected one of {', '.join(PLACEMENTS)}")
    if not has_chat_template(tokenizer):
        return plain_layout(tokenizer, placement)
    user_only = tokenizer.apply_chat_template(
        [{"role": "user", "content": _SENTINEL_USER}], tokenize=False, add_generation_prompt=True
    )
    head, tail = _split(user_only, _SENTINEL_USER, "user")
    sep = tuple(encode(tokenizer, SEPARATOR))
    layout = ChatLayout(placement, tuple(encode(tokenizer, head)), tuple(encode(tokenizer, tail)), sep)
    if placement != "system":
        return layout
    with_system = tokenizer.apply_chat_template(
        [{"role": "system", "content": _SENTINEL_SYSTEM}, {"role": "user", "content": _SENTINEL_USER}],
        tokenize=False,
        add_generation_prompt=True,
    )
    sys_head, rest = _split(with_system, _SENTINEL_SYSTEM, "system")
    sys_tail, tail2 = _split(rest, _SENTINEL_USER, "user")
    if tail2 != tail:
        raise UserInputError("tokenizer chat template: the user turn renders differently with a system message")
    return ChatLayout(
        placement,
        layout.head,
        layout.tail,
        sep,
        tuple(encode(tokenizer, sys_head)),
        tuple(encode(tokenizer, sys_tail)),
    )


def has_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def plain_bos(tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """(BOS,) when the tokenizer defines a BOS token, else () (the head of the plain layout)."""
    bos = tokenizer.bos_token_id
    return () if bos is None else (int(bos),)


def plain_layout(tokenizer: PreTrainedTokenizerBase, placement: Placement = "prefix") -> ChatLayout:
    """The layout for a model without a chat template (see module docstring); `system` is refused."""
    if placement not in PLACEMENTS:
        raise UserInputError(f"{arg('placement')} {placement}: expected one of {', '.join(PLACEMENTS)}")
    if placement == "system":
        raise UserInputError(f"{arg('placement')} system: this model has no chat template (a base model), so there is no "
                             "system turn to place a prompt in; use --placement prefix or suffix")
    key = str(getattr(tokenizer, "name_or_path", "") or id(tokenizer))
    if key not in _plain_logged:
        _plain_logged.add(key)
        logger.info("tokenizer %s has no chat template: placing prompts in plain text (BOS + prompt + newline + "
                    "context + newline)", key or "(unnamed)")
    newline = tuple(encode(tokenizer, SEPARATOR))
    return ChatLayout(placement, plain_bos(tokenizer), newline, newline, template="plain")
