"""Content proposals: the lexicon, residual ranking, content moves, and natural GCG with them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from realize.attacks.content import (
    Connectors, ContentLexicon, build_lexicon, content_moves, lexicon_words, most_fluent, plural, register_lexicon,
    residual_scores,
)
from realize.attacks.fluency import encode_head, lm_head_ids, prompt_surprisal
from realize.attacks.natural import NaturalConfig, run
from realize.attacks.objectives import ActivationShiftObjective
from realize.attacks.sampling import token_strings, word_spans
from realize.data.chat import chat_layout, encode
from realize.data.shift import generic_direction, mean_shift, prompt_shifts

CONTEXTS = ["What is the capital of France?", "How do I bake bread?", "Write a poem."]
WORDS = ("sea", "bread", "garden", "pirate", "river", "tomatoes", "wind", "fox")
ROOT = Path(__file__).resolve().parents[1]


def test_lexicon_words_are_filtered_and_singular():
    words = lexicon_words(3000)
    assert len(words) > 2000 and len(set(words)) == len(words)
    assert all(w.isascii() and w.isalpha() and len(w) >= 3 for w in words)
    assert "the" not in words and "about" not in words
    known = set(words)
    assert not [w for w in words if w.endswith("s") and w[:-1] in known]


def test_residual_scores_rank_the_missing_content_first():
    """A target = form + content_a; a prompt that has the form (and another content) lacks content_a most."""
    gen = torch.Generator().manual_seed(0)
    d, n = 16, 6
    shifts = torch.randn(n, d, generator=gen)
    shifts = shifts - shifts.mean(dim=0)
    g, form = torch.randn(d, generator=gen), torch.randn(d, generator=gen) * 3
    target = {0: 2.0 * g + form + shifts[2]}
    current = {0: 2.0 * g + form + shifts[4]}
    scores = residual_scores(current, target, {0: g}, {0: shifts})
    assert scores.shape == (n,) and int(scores.argmax()) == 2
    assert int(scores.argmin()) == 4  # what the prompt already says is least wanted
    both = residual_scores({0: current[0], 1: current[0]}, {0: target[0], 1: target[0]}, None,
                           {0: shifts, 1: shifts})
    assert int(both.argmax()) == 2
    with pytest.raises(ValueError, match="targets"):
        residual_scores({}, {}, None, {})


def _lexicon(tok) -> ContentLexicon:
    first = tuple(tuple(encode(tok, w.capitalize())) for w in WORDS)
    inner = tuple(tuple(tok(" " + w, add_special_tokens=False)["input_ids"]) for w in WORDS)
    return ContentLexicon(WORDS, first, inner, {})


def test_content_moves_place_whole_lexicon_words(tiny):
    tok = tiny.tokenizer
    lex = _lexicon(tok)
    strings = token_strings(tok, tiny.model.get_input_embeddings().weight.shape[0])
    ids = torch.tensor(encode(tok, "Explain it like I am five years old."))
    spans = word_spans([strings[t] for t in ids.tolist()])
    conn = Connectors.of(tok, strings)
    next_lp = torch.randn(ids.shape[0] + 1, len(strings), generator=torch.Generator().manual_seed(0)).log_softmax(-1)
    top = torch.tensor([1, 3])  # "bread", "pirate"
    cands = content_moves(ids, spans, lex, top, conn, next_lp, max_span=3, p_connector=0.5, max_tokens=32,
                          generator=torch.Generator().manual_seed(1), n=200)
    assert len(cands) > 20 and len({tuple(c.tolist()) for c in cands}) == len(cands)
    texts = [tok.decode(c.tolist()) for c in cands]
    for text in texts:
        assert re.search(r"(^| )(Bread|Pirate|bread|pirate)s?\b", text), text
        assert "sea" not in text.split()  # only the top words are drawn
    assert any(t.startswith(("Bread", "Pirate")) for t in texts)  # the first word, capitalized
    assert {len(c) for c in cands} != {ids.shape[0]}  # spans of several lengths
    attached = [t for t in texts if t.endswith(".") and t[:-1].split()[-1] in ("bread", "breads", "pirate", "pirates")
                and t.startswith("Explain it like I am five years old ")]
    assert len(attached) > 5  # attached at the end, before the final mark, after a connector head
    heads = {tiny.tokenizer.decode([h]) for h in conn.heads.tolist()}
    with_head = [t for t in attached if t[len("Explain it like I am five years old"):].split()[0] in
                 {h.strip() for h in heads}]
    assert len(with_head) > 5
    again = content_moves(ids, spans, lex, top, conn, next_lp, max_span=3, p_connector=0.5, max_tokens=32,
                          generator=torch.Generator().manual_seed(1), n=200)
    assert [c.tolist() for c in again] == [c.tolist() for c in cands]
    assert content_moves(ids, spans, lex, torch.zeros(0, dtype=torch.long), conn, next_lp, max_span=3,
                         p_connector=0.5, max_tokens=32, generator=torch.Generator(), n=10) == []


def _objective(tiny, prompt: str = "Write a short poem about the sea."):
    tok, model = tiny.tokenizer, tiny.model
    layout = chat_layout(tok)
    ctxs = [encode(tok, c) for c in CONTEXTS]
    g = generic_direction(model, layout, [encode(tok, "I have a question.")], ctxs, 2, pad_id=tok.pad_token_id)
    target = mean_shift(prompt_shifts(model, layout, [encode(tok, prompt)], ctxs, 2, pad_id=tok.pad_token_id)[0])
    return ActivationShiftObjective(model, tok, layout, target, 2, ctxs, generic=g), layout


def test_build_lexicon_centres_shifts_and_caches(tiny, tmp_path):
    objective, layout = _objective(tiny)
    lex = build_lexicon(tiny, layout, [1, 2], WORDS, cache_dir=tmp_path, fingerprint="tiny")
    assert set(lex.shifts) == {1, 2} and lex.shifts[2].shape == (len(WORDS), 32)
    assert torch.allclose(lex.shifts[2].mean(dim=0), torch.zeros(32), atol=1e-5)
    again = build_lexicon(tiny, layout, [1, 2], WORDS, cache_dir=tmp_path, fingerprint="tiny")
    assert len(list(tmp_path.iterdir())) == 1 and torch.equal(again.shifts[2], lex.shifts[2])
    scores = objective.content_scores(torch.tensor(encode(tiny.tokenizer, "Explain it.")), lex)
    assert scores is not None and scores.shape == (len(WORDS),)
    assert objective.content_scores(torch.tensor([5, 6]), build_lexicon(tiny, layout, [1], WORDS)) is None
    # a multi-layer steer: the mean over its layers of each layer's residual ranking
    multi = ActivationShiftObjective(tiny.model, tiny.tokenizer, layout, {1: torch.randn(32), 2: objective.target},
                                     None, objective.context_ids, generic={1: torch.randn(32), 2: objective.generic})
    prompt = torch.tensor(encode(tiny.tokenizer, "Explain it."))
    both = multi.content_scores(prompt, lex)
    one = {i: ActivationShiftObjective(tiny.model, tiny.tokenizer, layout, multi.targets[i], i, objective.context_ids,
                                       generic=multi.generics[i]).content_scores(prompt, lex) for i in (1, 2)}
    assert torch.allclose(both, (one[1] + one[2]) / 2, atol=1e-5)


def test_content_share_zero_is_todays_search_and_content_moves_run(tiny):
    objective, layout = _objective(tiny)
    start = encode(tiny.tokenizer, "Explain it like I am five years old.")
    lex = build_lexicon(tiny, layout, [2], WORDS)
    register_lexicon(objective, tiny, layout, NaturalConfig().content_words, lex)
    base = dict(steps=4, width=16, max_ce=50.0, max_surprisal=50.0, seed=3)
    plain = run(objective, tiny, layout, NaturalConfig(**base), init=start)
    off = run(objective, tiny, layout, NaturalConfig(**base, content_top_k=3, content_span=1), init=start)
    assert [s.prompt_ids for s in off.trajectory] == [s.prompt_ids for s in plain.trajectory]
    on = run(objective, tiny, layout, NaturalConfig(**base, content_share=0.5, content_top_k=3), init=start)
    assert on.config["n_content_moves"] == 8 and on.best_loss <= float(objective.losses(torch.tensor([start]))[0])
    again = run(objective, tiny, layout, NaturalConfig(**base, content_share=0.5, content_top_k=3), init=start)
    assert again.best_ids == on.best_ids
    head = encode_head(tiny.model, lm_head_ids(layout))
    assert float(prompt_surprisal(tiny.model, head, torch.tensor([on.best_ids]))[0].mean()) <= 50.0


def test_content_moves_find_a_lexicon_word_the_target_needs(tiny):
    """Target = the shift of "Write a short poem about the bread." from "Write a short poem about the sea.": with
    the lexicon holding "bread", the content search reaches a lower loss than the same budget without it."""
    objective, layout = _objective(tiny, "Write a short poem about the bread.")
    start = encode(tiny.tokenizer, "Write a short poem about the sea.")
    lex = build_lexicon(tiny, layout, [2], WORDS)
    register_lexicon(objective, tiny, layout, NaturalConfig().content_words, lex)
    base = dict(steps=3, width=12, max_ce=50.0, max_surprisal=50.0, seed=0, lm_top_k=4, top_k=4)
    without = run(objective, tiny, layout, NaturalConfig(**base), init=start)
    with_content = run(objective, tiny, layout, NaturalConfig(**base, content_share=0.5, content_top_k=2,
                                                              content_span=1, content_connector=0.0),
                       init=start)
    assert "bread" in with_content.best_prompt
    assert with_content.best_loss < without.best_loss


@pytest.mark.parametrize("field,value", [("content_share", 1.5), ("content_top_k", 0), ("content_span", -1),
                                         ("content_connector", 2.0), ("content_words", 0), ("content_draws", 0)])
def test_bad_content_config_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        NaturalConfig(**{field: value})


def test_dev_set_themes_are_absent_from_every_shipped_corpus():
    """The content search's dev pairs (benchmarks/content_siblings.tsv) stay out of the corpora and benchmarks."""
    rows = [ln.split("\t") for ln in (ROOT / "benchmarks" / "content_siblings.tsv").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")][1:]
    assert len(rows) >= 16 and len(rows) % 2 == 0
    texts = [p.read_text().lower() for p in (ROOT / "data" / "corpora").iterdir() if p.suffix in (".tsv", ".txt")]
    texts.append((ROOT / "benchmarks" / "heldout_targets.tsv").read_text().lower())
    for i in range(0, len(rows), 2):
        assert rows[i][0] == rows[i + 1][0] and rows[i][1] != rows[i + 1][1]
    for _, stem, prompt in rows:
        assert stem.lower() in prompt.lower()
        assert not any(stem.lower() in t for t in texts), stem


def test_behavior_content_scores_are_the_steers_token_gain(tiny):
    from realize.attacks.behavior_objective import BehaviorObjective
    from realize.data.steered import steered_contexts

    torch.manual_seed(0)
    layout = chat_layout(tiny.tokenizer, "prefix")
    contexts = steered_contexts(tiny, layout, {1: 3.0 * torch.randn(32)}, 1.0, CONTEXTS, 5)
    objective = BehaviorObjective(tiny.model, tiny.tokenizer, layout, contexts)
    gain = objective.token_gain()
    assert gain.shape == (objective.vocab_size,) and abs(float(gain.sum())) < 1e-4  # probability moves, not appears
    lex = _lexicon(tiny.tokenizer)
    scores = objective.content_scores(torch.tensor([5, 6]), lex)
    assert scores.shape == (len(WORDS),)
    assert torch.equal(scores, gain[torch.tensor([ids[0] for ids in lex.inner_ids])])
    # the word whose first token the steered continuations use most gains most among the lexicon's words
    pushed = int(gain.argmax())
    lex2 = ContentLexicon(("up", "other"), ((pushed,), (0,)), ((pushed,), (0,)), {})
    assert int(objective.content_scores(torch.tensor([5]), lex2).argmax()) == 0


def test_run_builds_the_default_lexicon_once_and_caches_it_on_disk(tiny, tmp_path, monkeypatch):
    import realize.attacks.content as content

    monkeypatch.setenv("REALIZE_CACHE", str(tmp_path))
    monkeypatch.setattr(content, "lexicon_words", lambda size: WORDS[:size])
    monkeypatch.setattr(content, "_MEMO", {})
    objective, layout = _objective(tiny)
    start = encode(tiny.tokenizer, "Explain it like I am five years old.")
    config = NaturalConfig(steps=2, width=8, max_ce=50.0, max_surprisal=50.0, content_share=0.5, content_words=5)
    run(objective, tiny, layout, config, init=start)
    files = list((tmp_path / "content_lexicon").iterdir())
    assert len(files) == 1 and len(content._MEMO) == 1
    lexicon = next(iter(content._MEMO.values()))
    assert lexicon.words == WORDS[:5] and set(lexicon.shifts) == {2}
    monkeypatch.setattr(content, "_MEMO", {})
    again = content.lexicon_for(objective, tiny, layout, 5)  # from the disk cache
    assert torch.equal(again.shifts[2], lexicon.shifts[2])


def test_plural_and_forms(tiny):
    assert [plural(w) for w in ("volcano", "city", "fox", "kite", "day", "church")] == [
        "volcanoes", "cities", "foxes", "kites", "days", "churches"]
    lex = build_lexicon(tiny, chat_layout(tiny.tokenizer), [], WORDS)
    assert lex.shifts == {} and len(lex.forms(1, first=False)) == 2
    assert tiny.tokenizer.decode(list(lex.forms(1, first=False)[1])) == " breads"
    assert tiny.tokenizer.decode(list(lex.forms(3, first=True)[0])) == "Pirate"
    assert _lexicon(tiny.tokenizer).forms(1, first=False) == (_lexicon(tiny.tokenizer).inner_ids[1],)
    with pytest.raises(ValueError, match="plural"):
        ContentLexicon(("a", "b"), ((1,), (2,)), ((1,), (2,)), {}, ((1,),), ((1,),))


def test_most_fluent_keeps_the_lowest_ce_content_fills_and_every_other_candidate():
    ce = torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0, 0.5])
    ok = torch.tensor([True, True, True, True, True, False])
    is_content = torch.tensor([False, True, True, True, False, True])
    assert most_fluent(ce, ok, is_content, 2).tolist() == [True, True, False, True, True, False]
    assert most_fluent(ce, ok, is_content, 0).tolist() == [True, False, False, False, True, False]
    assert most_fluent(ce, ok, torch.zeros(6, dtype=torch.bool), 3).tolist() == ok.tolist()


def test_behavior_objective_ranks_the_words_the_steer_says_more(tiny):
    """The behavior objective's content scores: each lexicon word's probability gain under the steer, at its first
    token, the same for every prompt; a word whose token the steered text makes likelier ranks above the rest."""
    from realize.attacks.behavior_objective import BehaviorObjective
    from realize.data.chat import chat_layout
    from realize.data.steered import SteeredContext

    layout = chat_layout(tiny.tokenizer)
    lex = build_lexicon(tiny, layout, [], WORDS)
    vocab = tiny.model.get_input_embeddings().weight.shape[0]
    base = torch.log_softmax(torch.zeros(3, vocab), -1)
    favoured = lex.inner_ids[1][0]
    logits = torch.zeros(3, vocab)
    logits[:, favoured] = 3.0
    context = encode(tiny.tokenizer, "How do I bake bread at home?")
    steered = SteeredContext("ctx", tuple(context), tuple(layout.place(None, context).ids), (5, 6, 7),
                             torch.log_softmax(logits, -1), base)
    objective = BehaviorObjective(tiny.model, tiny.tokenizer, layout, [steered])
    scores = objective.content_scores(torch.tensor(encode(tiny.tokenizer, "Be brief.")), lex)
    assert scores is not None and scores.shape == (len(lex.inner_ids),) and int(scores.argmax()) == 1
    other = objective.content_scores(torch.tensor(encode(tiny.tokenizer, "Explain it.")), lex)
    assert torch.equal(scores, other)


@pytest.mark.parametrize("name", ["sibling_pairs_heldout.tsv", "sibling_pairs_heldout2.tsv", "sibling_pairs_heldout3.tsv",
                                  "sibling_pairs_heldout4.tsv", "sibling_pairs_heldout5.tsv"])
def test_heldout_sibling_pairs_stay_out_of_every_shipped_corpus(name):
    """The held-out sibling pairs (benchmarks/bench_siblings.py) name their content words in the pair column
    ("lantern-anvil"); none may occur as a word in a shipped corpus, or the content test's bench is not held out."""
    import re

    rows = [ln.split("\t") for ln in (ROOT / "benchmarks" / name).read_text().splitlines()
            if ln.strip() and not ln.startswith("#") and not ln.startswith("pair\t")]
    assert len(rows) == 16 and {r[1] for r in rows} == {"a", "b"}
    corpora = " ".join(p.read_text().lower() for p in (ROOT / "data" / "corpora").iterdir()
                       if p.suffix in (".tsv", ".txt"))
    for pair, _, prompt in rows:
        assert any(word in prompt.lower() for word in pair.split("-")), (name, pair, prompt)
        for word in pair.split("-"):
            assert not re.search(rf"\b{word}", corpora), (name, word)
