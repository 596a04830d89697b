"""Candidate sampling and filtering for token-space search: pure functions (no model), shapes in the docstrings.

Public API (stable):

    allowed_token_mask(tokenizer, ascii_only=True, vocab_size=None) -> (V,) bool
    sample_candidates(ids (L,), grad (L, V), *, width, top_k, n_replace, mask (V,), generator) -> (width, L)
    insert_candidates(ids (L,), grad (L, V), *, n, top_k, mask, generator) -> (n, L + 1)
    delete_candidates(ids (L,), *, n, generator) -> (n, L - 1)
    random_candidates(n, length, *, mask, generator) -> (n, length)
    retokenization_filter(tokenizer, layout | None, candidates (B, L), *, context=()) -> (B,) bool
    dedupe(candidates (B, L), seen: set[tuple[int, ...]]) -> (B', L)
    token_strings(tokenizer, vocab_size=None) -> list[str]           # each id decoded alone ("" if unknown)
    word_token_masks(strings) -> (first (V,), inner (V,)) bool        # tokens that are a whole word
    word_spans(strings of a prompt's tokens) -> list[(start, end)]    # the prompt's words as token spans

Words (for searches that keep words whole): a token starts a word when it is the first one, begins with
whitespace, or begins with punctuation other than an apostrophe or hyphen (so "'t", "-like" continue a word).
A whole-word token is, at the prompt's first position, letters only (no leading space: the chat turn starts
there); elsewhere, a space followed by letters only, or one punctuation mark (`PUNCTUATION`).

All randomness comes from the `generator` argument (a CPU torch.Generator), so a seed fixes every draw.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache

import torch
from transformers import PreTrainedTokenizerBase

from realize.data.chat import ChatLayout

__all__ = [
    "PUNCTUATION", "allowed_token_mask", "dedupe", "delete_candidates", "insert_candidates", "random_candidates",
    "retokenization_filter", "sample_candidates", "token_strings", "word_spans", "word_token_masks",
]

PUNCTUATION = (",", ".", "?", "!", ":", ";")  # tokens that count as a whole word after the first position
_MEMO_SIZE = 8  # decoded vocabularies (and masks derived from them) kept in memory


def allowed_token_mask(
    tokenizer: PreTrainedTokenizerBase, ascii_only: bool = True, vocab_size: int | None = None
) -> torch.Tensor:
    """(V,) bool: tokens a candidate may use. V = `vocab_size` (the model's embedding rows) or len(tokenizer);
    ids the tokenizer does not know are disallowed. A token is allowed when it is not special, decodes on its own
    to a non-empty string without replacement characters, and (ascii_only) that string is printable ASCII.
    Reads the decoded vocabulary `token_strings` keeps, so only the first call per tokenizer decodes it."""
    return _allowed(_decoded(tokenizer, vocab_size), ascii_only).clone()


@lru_cache(maxsize=_MEMO_SIZE)
def _allowed(strings: tuple[str, ...], ascii_only: bool) -> torch.Tensor:
    """Keyed on the strings themselves (never stale); "" (special, unknown) is disallowed."""
    mask = torch.zeros(len(strings), dtype=torch.bool)
    for i, text in enumerate(strings):
        if not text or "\ufffd" in text:
            continue
        if ascii_only and not (text.isascii() and text.isprintable()):
            continue
        mask[i] = True
    return mask


def _top_k_ids(grad: torch.Tensor, top_k: int, mask: torch.Tensor) -> torch.Tensor:
    """grad (L, V) -> (L, k) ids of the k most negative gradient entries among allowed tokens, k <= #allowed."""
    k = max(1, min(top_k, int(mask.sum())))
    scores = (-grad.float()).masked_fill(~mask.to(grad.device).unsqueeze(0), float("-inf"))
    return scores.topk(k, dim=1).indices.cpu()


def sample_candidates(
    ids: torch.Tensor,
    grad: torch.Tensor,
    *,
    width: int,
    top_k: int,
    n_replace: int,
    mask: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """nanoGCG-style swaps. ids (L,), grad (L, V) of the loss w.r.t. the one-hot prompt, mask (V,) bool ->
    candidates (width, L): each row replaces `n_replace` distinct random positions (clamped to L) by a token drawn
    uniformly from that position's `top_k` of -grad among allowed tokens."""
    if ids.dim() != 1 or grad.shape[0] != ids.shape[0]:
        raise ValueError(f"ids (L,) and grad (L, V) must agree, got {tuple(ids.shape)} and {tuple(grad.shape)}")
    length = ids.shape[0]
    n_replace = max(1, min(n_replace, length))
    top = _top_k_ids(grad, top_k, mask)  # (L, k)
    positions = torch.rand((width, length), generator=generator).argsort(dim=1)[:, :n_replace]  # (W, n)
    choice = torch.randint(0, top.shape[1], (width, n_replace), generator=generator)
    values = top[positions, choice]  # (W, n)
    return ids.cpu().long().unsqueeze(0).repeat(width, 1).scatter_(1, positions, values)


def insert_candidates(
    ids: torch.Tensor, grad: torch.Tensor, *, n: int, top_k: int, mask: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """ids (L,), grad (L, V) -> (n, L + 1): a token inserted at a random position i in 0..L. The token is drawn
    from the top-k of -grad at position min(i, L - 1) (the slot the new token pushes right), so the gradient still
    guides what is inserted."""
    length = ids.shape[0]
    top = _top_k_ids(grad, top_k, mask)
    where = torch.randint(0, length + 1, (n,), generator=generator)
    choice = torch.randint(0, top.shape[1], (n,), generator=generator)
    tokens = top[where.clamp(max=length - 1), choice]
    base = ids.cpu().long()
    rows = [torch.cat([base[:i], tokens[r : r + 1], base[i:]]) for r, i in enumerate(where.tolist())]
    return torch.stack(rows) if rows else torch.empty(0, length + 1, dtype=torch.long)


def delete_candidates(ids: torch.Tensor, *, n: int, generator: torch.Generator) -> torch.Tensor:
    """ids (L,) with L >= 2 -> (min(n, L), L - 1): distinct random positions deleted."""
    length = ids.shape[0]
    if length < 2:
        raise ValueError("ids: deleting a token needs a prompt of length >= 2")
    where = torch.randperm(length, generator=generator)[: min(n, length)]
    base = ids.cpu().long()
    return torch.stack([torch.cat([base[:i], base[i + 1 :]]) for i in where.tolist()])


def random_candidates(n: int, length: int, *, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(n, length) tokens drawn uniformly from the allowed ones."""
    allowed = mask.nonzero().squeeze(1)
    if allowed.numel() == 0:
        raise ValueError("mask: no token is allowed")
    return allowed[torch.randint(0, allowed.numel(), (n, length), generator=generator)]


def retokenization_filter(
    tokenizer: PreTrainedTokenizerBase,
    layout: ChatLayout | None,
    candidates: torch.Tensor,
    *,
    context: Sequence[int] = (),
) -> torch.Tensor:
    """candidates (B, L) -> (B,) bool: True where the candidate survives a text round trip *in context*.

    With a layout, the whole input `layout.place(candidate, context)` is cut into text around the prompt slot
    (the template before it and the separator/context/template after it are decoded once), the candidate is
    decoded, the joined text is re-encoded (one batched call to the fast tokenizer), and the result must equal
    the placed ids exactly. Without a layout only the candidate's own text is re-encoded (nanoGCG's check)."""
    if candidates.dim() != 2:
        raise ValueError(f"candidates: expected (B, L), got {tuple(candidates.shape)}")
    rows = candidates.tolist()
    if not rows:
        return torch.zeros(0, dtype=torch.bool)
    texts = tokenizer.batch_decode(rows, clean_up_tokenization_spaces=False)
    if layout is None:
        pre: list[int] = []
        post: list[int] = []
    else:
        probe = layout.place([0], context)  # a 1-token prompt locates the slot
        slot = probe.prompt[0]
        pre, post = list(probe.ids[:slot]), list(probe.ids[slot + 1 :])
    pre_text = tokenizer.decode(pre, clean_up_tokenization_spaces=False) if pre else ""
    post_text = tokenizer.decode(post, clean_up_tokenization_spaces=False) if post else ""
    encoded = tokenizer([pre_text + t + post_text for t in texts], add_special_tokens=False)["input_ids"]
    return torch.tensor([enc == pre + row + post for enc, row in zip(encoded, rows, strict=True)], dtype=torch.bool)


def dedupe(candidates: torch.Tensor, seen: set[tuple[int, ...]]) -> torch.Tensor:
    """candidates (B, L) -> (B', L): rows not in `seen` and not repeated earlier in the batch, in order.
    `seen` is not modified (the caller adds what it evaluates)."""
    keep: list[int] = []
    local: set[tuple[int, ...]] = set()
    for i, row in enumerate(candidates.tolist()):
        key = tuple(row)
        if key in seen or key in local:
            continue
        local.add(key)
        keep.append(i)
    return candidates[keep]


_STRINGS: OrderedDict[tuple[object, ...], tuple[PreTrainedTokenizerBase, tuple[str, ...]]] = OrderedDict()


def _decoded(tokenizer: PreTrainedTokenizerBase, vocab_size: int | None) -> tuple[str, ...]:
    """`token_strings` as a tuple, kept for the last `_MEMO_SIZE` (tokenizer, size) pairs. The key holds what a
    caller could change (size, name, special ids) beside the object's id, and the entry holds the tokenizer, so
    the id cannot be reused while it is kept."""
    size = int(vocab_size if vocab_size is not None else len(tokenizer))
    special = frozenset(tokenizer.all_special_ids) | frozenset(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    key = (id(tokenizer), size, len(tokenizer), getattr(tokenizer, "name_or_path", None), special)
    if key in _STRINGS:
        _STRINGS.move_to_end(key)
        return _STRINGS[key][1]
    n = min(size, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(n)], clean_up_tokenization_spaces=False)
    strings = tuple(("" if i in special else t) for i, t in enumerate(texts)) + ("",) * (size - n)
    _STRINGS[key] = (tokenizer, strings)
    if len(_STRINGS) > _MEMO_SIZE:
        _STRINGS.popitem(last=False)
    return strings


def token_strings(tokenizer: PreTrainedTokenizerBase, vocab_size: int | None = None) -> list[str]:
    """Each id 0..V-1 decoded on its own (V = `vocab_size` or len(tokenizer)); "" for special and unknown ids.
    Decoding a 49k vocabulary takes seconds, so the result is kept per tokenizer (`_decoded`)."""
    return list(_decoded(tokenizer, vocab_size))


def _letters(text: str) -> bool:
    return text.isascii() and text.isalpha()


def word_token_masks(strings: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """strings (V,) from `token_strings` -> (first, inner), each (V,) bool: tokens that are a whole word at the
    prompt's first position (letters only) and after it (a space then letters only, or one punctuation mark)."""
    first, inner = _word_masks(tuple(strings))
    return first.clone(), inner.clone()


@lru_cache(maxsize=_MEMO_SIZE)
def _word_masks(strings: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Keyed on the strings themselves (never stale)."""
    first = torch.tensor([_letters(t) for t in strings], dtype=torch.bool)
    inner = torch.tensor([(t[:1] == " " and _letters(t[1:])) or t in PUNCTUATION for t in strings],
                         dtype=torch.bool)
    return first, inner


def _starts_word(text: str) -> bool:
    return bool(text) and (text[0].isspace() or (not text[0].isalnum() and text[0] not in "'-"))


def word_spans(strings: Sequence[str]) -> list[tuple[int, int]]:
    """The decoded tokens of one prompt -> its words as [start, end) token spans, in order, covering every token."""
    starts = [i for i, t in enumerate(strings) if i == 0 or _starts_word(t)]
    return [(a, b) for a, b in zip(starts, [*starts[1:], len(strings)], strict=True)]
