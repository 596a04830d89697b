"""Natural GCG: word-level moves keep words whole, the fluency budget holds, the search improves and is seeded."""

from __future__ import annotations

import pytest
import torch

from realize.attacks.fluency import encode_head, lm_head_ids, prompt_surprisal
from realize.attacks.natural import NaturalConfig, _Masks, run, word_moves
from realize.attacks.objectives import ActivationShiftObjective
from realize.attacks.sampling import token_strings, word_spans, word_token_masks
from realize.data.chat import chat_layout, encode
from realize.data.shift import generic_direction, prompt_shifts, mean_shift

CONTEXTS = ["What is the capital of France?", "How do I bake bread?", "Write a poem."]


def test_word_spans_and_masks():
    strings = ["Explain", " it", " like", " I", " am", " fi", "ve", " years", "'t", ".", " old"]
    assert word_spans(strings) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 7), (7, 9), (9, 10), (10, 11)]
    first, inner = word_token_masks(["Hello", " there", ",", "ab1", " x y", "", "-like", " Zoo", "s"])
    assert first.tolist() == [True, False, False, False, False, False, False, False, True]
    assert inner.tolist() == [False, True, True, False, False, False, False, True, False]


def _moves_setup(tiny):
    tok = tiny.tokenizer
    strings = token_strings(tok, tiny.model.get_input_embeddings().weight.shape[0])
    first, inner = word_token_masks(strings)
    ids = torch.tensor(encode(tok, "Explain it like I am five years old."))
    spans = word_spans([strings[t] for t in ids.tolist()])
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(ids.shape[0], len(strings), generator=gen)
    next_lp = torch.randn(ids.shape[0] + 1, len(strings), generator=gen).log_softmax(-1)
    return strings, _Masks(first, inner), ids, spans, grad, next_lp


def test_word_moves_keep_every_word_whole(tiny):
    """Every word of every candidate is a word of the original prompt or one whole-word token."""
    strings, masks, ids, spans, grad, next_lp = _moves_setup(tiny)
    original = {tuple(ids[a:b].tolist()) for a, b in spans}
    config = NaturalConfig(p_insert=0.3, p_delete=0.2, p_double=0.5)
    cands = word_moves(ids, spans, grad, next_lp, masks, config, torch.Generator().manual_seed(1), 200)
    assert len(cands) > 150
    for cand in cands:
        words = [tuple(cand[a:b].tolist()) for a, b in word_spans([strings[t] for t in cand.tolist()])]
        for i, word in enumerate(words):
            whole = len(word) == 1 and bool((masks.first if i == 0 else masks.inner)[word[0]])
            assert word in original or whole, (i, [strings[t] for t in word])
        assert words[0] == tuple(ids[spans[0][0]:spans[0][1]].tolist()) or len(words[0]) == 1
    lengths = {int(c.shape[0]) for c in cands}
    assert min(lengths) < ids.shape[0] < max(lengths)  # deletions and insertions both happen


def test_lm_share_one_draws_only_lm_proposals(tiny):
    strings, masks, ids, spans, grad, next_lp = _moves_setup(tiny)
    config = NaturalConfig(lm_share=1.0, lm_top_k=5, top_k=5, p_insert=0.0, p_delete=0.0, p_double=0.0)
    cands = word_moves(ids, spans, grad, next_lp, masks, config, torch.Generator().manual_seed(2), 50)
    for cand in cands:
        j = int((cand != ids).nonzero()[0]) if cand.shape == ids.shape else None
        if j is None:
            continue
        allowed = masks.first if j == 0 else masks.inner
        top = next_lp[j].masked_fill(~allowed, float("-inf")).topk(5).indices.tolist()
        assert int(cand[j]) in top


def _objective(tiny):
    tok, model = tiny.tokenizer, tiny.model
    layout = chat_layout(tok)
    ctxs = [encode(tok, c) for c in CONTEXTS]
    g = generic_direction(model, layout, [encode(tok, "I have a question.")], ctxs, 2, pad_id=tok.pad_token_id)
    target = mean_shift(prompt_shifts(model, layout, [encode(tok, "Write a short poem about the sea.")], ctxs, 2,
                                      pad_id=tok.pad_token_id)[0])
    return ActivationShiftObjective(model, tok, layout, target, 2, ctxs, generic=g), layout


def test_natural_improves_within_the_fluency_budget_and_is_seeded(tiny):
    objective, layout = _objective(tiny)
    start = encode(tiny.tokenizer, "Explain it like I am five years old.")
    head = encode_head(tiny.model, lm_head_ids(layout))
    s0 = prompt_surprisal(tiny.model, head, torch.tensor([start]))[0]
    config = NaturalConfig(steps=6, width=16, max_ce=float(s0.mean()) + 1.0, max_surprisal=float(s0.max()) + 2.0,
                           seed=3)
    result = run(objective, tiny, layout, config, init=start)
    assert result.best_loss < float(objective.losses(torch.tensor([start]))[0])
    best = torch.tensor([result.best_ids])
    s = prompt_surprisal(tiny.model, head, best)[0]
    assert float(s.mean()) <= config.max_ce + 1e-5 and float(s.max()) <= config.max_surprisal + 1e-5
    assert result.frontier and all(p.ce <= config.max_ce + 1e-5 for p in result.frontier)
    again = run(objective, tiny, layout, config, init=start)
    assert again.best_ids == result.best_ids and [s.prompt_ids for s in again.trajectory] == [
        s.prompt_ids for s in result.trajectory]


def test_probe_sampling_scores_fewer_candidates_on_all_contexts(tiny):
    objective, layout = _objective(tiny)
    start = encode(tiny.tokenizer, "Explain it like I am five years old.")
    base = dict(steps=3, width=16, max_ce=50.0, max_surprisal=50.0, seed=0)
    full = run(objective, tiny, layout, NaturalConfig(**base), init=start)
    probed = run(objective, tiny, layout, NaturalConfig(**base, probe_contexts=1, probe_keep=0.25), init=start)
    assert probed.config["n_screened"] > 0
    assert sum(s.n_candidates for s in probed.trajectory) < sum(s.n_candidates for s in full.trajectory)


def test_frontier_without_metrics_keeps_every_other_value(tiny):
    """`frontier_metrics=False` (the audit reads only the frontier's ids) changes nothing but cos/specific_cos."""
    objective, layout = _objective(tiny)
    start = encode(tiny.tokenizer, "Explain it like I am five years old.")
    base = dict(steps=4, width=16, max_ce=50.0, max_surprisal=50.0, seed=1)
    on = run(objective, tiny, layout, NaturalConfig(**base), init=start)
    off = run(objective, tiny, layout, NaturalConfig(**base, frontier_metrics=False), init=start)
    assert len(on.frontier) > 1 and all(p.cos is not None and p.specific_cos is not None for p in on.frontier)
    assert all(p.cos is None and p.specific_cos is None for p in off.frontier)
    kept = ("prompt", "ids", "loss", "ce", "perplexity", "fluency_weight")
    assert [[getattr(p, k) for k in kept] for p in on.frontier] == [[getattr(p, k) for k in kept] for p in off.frontier]
    assert (on.best_ids, on.best_loss, on.n_evaluations) == (off.best_ids, off.best_loss, off.n_evaluations)
    assert [s.prompt_ids for s in on.trajectory] == [s.prompt_ids for s in off.trajectory]


def test_restricted_objective_equals_one_built_on_those_contexts(tiny):
    objective, layout = _objective(tiny)
    sub = objective.restricted([2, 0])
    ref = ActivationShiftObjective(tiny.model, tiny.tokenizer, layout, objective.target, 2,
                                   [objective.context_ids[2], objective.context_ids[0]], generic=objective.generic)
    prompts = torch.randint(10, 300, (3, 4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(sub.losses(prompts), ref.losses(prompts))
    with pytest.raises(ValueError, match="contexts"):
        objective.restricted([5])


@pytest.mark.parametrize("field,value", [("steps", 0), ("lm_share", 1.5), ("probe_keep", 0.0), ("max_ce", -1.0),
                                         ("p_insert", 0.8)])
def test_bad_config_names_field(field, value):
    kwargs = {field: value}
    if field == "p_insert":
        kwargs["p_delete"] = 0.5
    with pytest.raises(ValueError, match=field.split("_")[0]):
        NaturalConfig(**kwargs)
