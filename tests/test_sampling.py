"""Candidate sampling and filtering: shapes, allowed-token mask, determinism, retokenization, dedupe."""

from __future__ import annotations

import copy

import pytest
import torch

from realize.attacks.sampling import (
    allowed_token_mask, dedupe, delete_candidates, insert_candidates, random_candidates, retokenization_filter,
    sample_candidates, token_strings, word_token_masks,
)
from realize.data.chat import chat_layout, encode


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_allowed_mask_excludes_specials_and_non_ascii(tiny_tokenizer):
    mask = allowed_token_mask(tiny_tokenizer)
    assert mask.shape == (len(tiny_tokenizer),) and mask.dtype == torch.bool
    for sid in tiny_tokenizer.all_special_ids:
        assert not mask[sid]
    for i in mask.nonzero().squeeze(1).tolist():
        text = tiny_tokenizer.decode([i])
        assert text and text.isascii() and text.isprintable()
    loose = allowed_token_mask(tiny_tokenizer, ascii_only=False)
    assert loose.sum() > mask.sum()  # byte-level BPE has non-ASCII byte tokens
    padded = allowed_token_mask(tiny_tokenizer, vocab_size=len(tiny_tokenizer) + 7)
    assert padded.shape[0] == len(tiny_tokenizer) + 7 and not padded[-7:].any()


def test_sample_candidates_shapes_mask_and_top_k(tiny_tokenizer):
    mask = allowed_token_mask(tiny_tokenizer)
    ids = torch.tensor(encode(tiny_tokenizer, "Explain it like I am five"))
    grad = torch.randn(ids.shape[0], mask.shape[0], generator=_gen(1))
    cands = sample_candidates(ids, grad, width=40, top_k=5, n_replace=2, mask=mask, generator=_gen())
    assert cands.shape == (40, ids.shape[0]) and cands.dtype == torch.long
    changed = (cands != ids).sum(dim=1)
    assert (changed <= 2).all() and (changed >= 1).any()
    top = (-grad).masked_fill(~mask, float("-inf")).topk(5, dim=1).indices
    for row in cands:
        for pos in (row != ids).nonzero().squeeze(1).tolist():
            assert mask[row[pos]] and row[pos] in top[pos]


def test_sampling_is_deterministic_per_seed(tiny_tokenizer):
    mask = allowed_token_mask(tiny_tokenizer)
    ids = torch.tensor(encode(tiny_tokenizer, "Write a short poem"))
    grad = torch.randn(ids.shape[0], mask.shape[0], generator=_gen(3))
    a = sample_candidates(ids, grad, width=16, top_k=8, n_replace=1, mask=mask, generator=_gen(5))
    b = sample_candidates(ids, grad, width=16, top_k=8, n_replace=1, mask=mask, generator=_gen(5))
    c = sample_candidates(ids, grad, width=16, top_k=8, n_replace=1, mask=mask, generator=_gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_insert_delete_random_shapes(tiny_tokenizer):
    mask = allowed_token_mask(tiny_tokenizer)
    ids = torch.tensor(encode(tiny_tokenizer, "I have a question"))
    grad = torch.randn(ids.shape[0], mask.shape[0], generator=_gen())
    ins = insert_candidates(ids, grad, n=6, top_k=4, mask=mask, generator=_gen())
    dele = delete_candidates(ids, n=3, generator=_gen())
    rnd = random_candidates(5, 7, mask=mask, generator=_gen())
    assert ins.shape == (6, ids.shape[0] + 1) and dele.shape == (3, ids.shape[0] - 1) and rnd.shape == (5, 7)
    assert mask[rnd].all()
    for row in dele:  # each deletion is ids minus one position
        assert any(torch.equal(row, torch.cat([ids[:i], ids[i + 1 :]])) for i in range(ids.shape[0]))
    with pytest.raises(ValueError, match="length >= 2"):
        delete_candidates(ids[:1], n=1, generator=_gen())


@pytest.mark.parametrize("placement", ["prefix", "suffix", "system"])
def test_retokenization_filter(tiny_tokenizer, placement):
    tok = tiny_tokenizer
    layout = chat_layout(tok, placement)
    context = encode(tok, "What is the capital of France?")
    good = encode(tok, "Explain it like I am five")
    # the same text split into single characters does not round-trip: re-encoding merges them again
    split = [encode(tok, ch)[0] for ch in "Explain"]
    rows = [good[:6], split[:6]]
    keep = retokenization_filter(tok, layout, torch.tensor(rows), context=context)
    assert keep.tolist() == [True, False]
    # nanoGCG-style check without a layout rejects it too
    assert retokenization_filter(tok, None, torch.tensor(rows)).tolist() == [True, False]


@pytest.mark.slow
def test_retokenization_filter_in_context_catches_boundary_merges():
    """On SmolLM2, a prompt starting with a newline round-trips alone, but in context that newline merges with
    the template's newline before the user content ("\\n\\n" is one token), so the placed ids are not what the
    joined text tokenizes to."""
    from realize.data.models import load_model

    tok = load_model().tokenizer
    row = encode(tok, "\n Explain it")
    alone = retokenization_filter(tok, None, torch.tensor([row]))
    assert bool(alone[0])
    for placement in ("prefix", "suffix", "system"):
        layout = chat_layout(tok, placement)
        assert not retokenization_filter(tok, layout, torch.tensor([row]), context=encode(tok, "Why?"))[0]


def test_dedupe():
    cands = torch.tensor([[1, 2], [3, 4], [1, 2], [5, 6]])
    out = dedupe(cands, {(5, 6)})
    assert out.tolist() == [[1, 2], [3, 4]]
    assert dedupe(cands[:0], set()).shape == (0, 2)


def _decode_all(tok, size: int) -> list[str]:
    """Each id decoded alone, specials and unknown ids "", without any kept result (the reference)."""
    special = set(tok.all_special_ids) | set(tok.added_tokens_decoder)
    texts = tok.batch_decode([[i] for i in range(min(size, len(tok)))], clean_up_tokenization_spaces=False)
    return [("" if i in special else t) for i, t in enumerate(texts)] + [""] * (size - len(texts))


@pytest.mark.parametrize("ascii_only", [True, False])
def test_kept_vocabulary_masks_equal_fresh_ones_and_are_copies(tiny_tokenizer, ascii_only: bool):
    size = len(tiny_tokenizer) + 5
    strings = _decode_all(tiny_tokenizer, size)
    ref = torch.tensor([bool(t) and "\ufffd" not in t and (not ascii_only or (t.isascii() and t.isprintable()))
                        for t in strings])
    for _ in range(2):  # the second call reads what the first kept
        assert token_strings(tiny_tokenizer, size) == strings
        mask = allowed_token_mask(tiny_tokenizer, ascii_only=ascii_only, vocab_size=size)
        assert torch.equal(mask, ref)
        mask.fill_(True)  # a caller's edit must not reach the next call
        first, inner = word_token_masks(strings)
        first.fill_(True)
    assert torch.equal(word_token_masks(strings)[0], torch.tensor([t.isascii() and t.isalpha() for t in strings]))


def test_kept_vocabulary_follows_added_special_tokens(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    word = next(i for i, t in enumerate(token_strings(tok)) if t.strip().isalpha())
    assert allowed_token_mask(tok)[word]
    tok.add_special_tokens({"additional_special_tokens": [tok.convert_ids_to_tokens(word)]})
    assert token_strings(tok)[word] == "" and not allowed_token_mask(tok)[word]
