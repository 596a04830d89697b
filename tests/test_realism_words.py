"""Word-level realism features, local LM features, near-natural corruptions and the cluster split."""

from __future__ import annotations

import random

import pytest
import torch

from realize.scorers.realism.corruptions import (
    FAMILY_OF,
    FUNCTION_WORDS,
    function_drop,
    function_dup,
    local_shuffle,
    near_natural_corruptions,
    subword_glue,
    word_merge,
    train_only_corruptions,
    word_swap_common,
)
from realize.scorers.realism.dataset import split_by_cluster
from realize.scorers.realism.lm_features import LOCAL_LM_FEATURES, local_lm_features
from realize.scorers.realism.words import (
    WORD_FEATURES,
    split_words,
    token_spans,
    word_features,
    word_pieces,
    word_surprisal_excess,
)

PROMPT = "Explain it like I am five years old."


def test_words_and_pieces(tiny_tokenizer) -> None:
    text = "Explain itlike a runny yotained? don't"
    words = split_words(text)
    assert [w.text for w in words] == ["Explain", "itlike", "a", "runny", "yotained", "don't"]
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    spans = token_spans(tiny_tokenizer, text, ids)
    assert len(spans) == len(ids) and spans[-1][1] == len(text)
    pieces = word_pieces(words, spans)
    assert all(pieces)  # every word has at least one token
    assert sorted({i for p in pieces for i in p}) == [i for i, (a, b) in enumerate(spans) if text[a:b].strip("? ")]
    f = dict(zip(WORD_FEATURES, word_features(words, pieces), strict=True))
    assert f["n_oov_words"] == 2 and f["min_word_zipf"] == 0.0  # itlike, yotained
    natural = split_words(PROMPT)
    g = dict(zip(WORD_FEATURES, word_features(natural, [[0]] * len(natural)), strict=True))
    assert g["n_oov_words"] == 0 and g["min_word_zipf"] > 3 and g["max_pieces_per_word"] == 1
    dup = split_words("Explain it like like I am five.")
    assert word_features(dup, [[0]] * len(dup))[WORD_FEATURES.index("n_adjacent_repeated_words")] == 1


def test_word_excess_is_surprisal_minus_unigram_cost() -> None:
    words = split_words("the zzzqx")
    excess = word_surprisal_excess(words, [[0], [1, 2]], [None, 5.0, 6.0])
    assert excess == pytest.approx([11.0 - words[1].unigram_cost])  # the unscored first word is skipped
    assert words[0].unigram_cost < words[1].unigram_cost


def test_local_lm_features() -> None:
    s = torch.tensor([3.0, 1.0, 9.0, 2.0, 11.0])
    f = dict(zip(LOCAL_LM_FEATURES, local_lm_features(s, 4.0, [1.0, 3.0]), strict=True))
    assert f["second_max_surprisal"] == 9.0 and f["max_surprisal_pos"] == 1.0
    assert f["max_surprisal_rise"] == 9.0 and f["max_pair_surprisal"] == 13.0
    assert f["n_surprisal_gt_6"] == 2 and f["n_surprisal_gt_10"] == 1
    assert f["end_surprisal"] == 4.0 and f["max_word_excess"] == 3.0 and f["mean_word_excess"] == 2.0
    empty = local_lm_features(torch.empty(0), 1.0, [])
    assert len(empty) == len(LOCAL_LM_FEATURES)


@pytest.mark.parametrize("corrupt", [word_swap_common, word_merge, function_drop, function_dup, local_shuffle])
def test_corruptions_make_one_small_edit(corrupt) -> None:
    rng = random.Random(0)
    for _ in range(20):
        out = corrupt(PROMPT, rng)
        assert out is not None and out != PROMPT
        assert abs(len(out.split()) - len(PROMPT.split())) <= 1
    assert corrupt("Hi.", rng) is None  # too short to corrupt


def test_specific_corruptions() -> None:
    rng = random.Random(1)
    assert len(function_drop(PROMPT, rng).split()) == len(PROMPT.split()) - 1  # type: ignore[union-attr]
    merged = word_merge(PROMPT, rng)
    assert merged is not None and merged.replace(" ", "") == PROMPT.replace(" ", "")
    shuffled = local_shuffle(PROMPT, rng)
    assert shuffled is not None and sorted(shuffled.split()) == sorted(PROMPT.split())
    assert shuffled.split()[0] == "Explain"  # the first pair is never swapped
    glued = subword_glue(PROMPT, rng, (("yot",), ("ained",)))
    assert glued is not None and ("ained" in glued)


def test_near_natural_corruptions_use_tokenizer(tiny_tokenizer) -> None:
    kinds = near_natural_corruptions(tiny_tokenizer)
    assert set(kinds) == {"word_swap_common", "subword_glue", "word_merge", "function_drop", "function_dup",
                          "local_shuffle"}
    a = [kinds["subword_glue"](PROMPT, random.Random(s)) for s in range(5)]
    b = [kinds["subword_glue"](PROMPT, random.Random(s)) for s in range(5)]
    assert a == b  # deterministic given the RNG


def test_train_only_corruptions_make_one_edit_of_their_family() -> None:
    kinds = train_only_corruptions()
    assert set(kinds) == set(FAMILY_OF) and all(related for related in FAMILY_OF.values())
    words = PROMPT.split()
    for seed in range(20):
        out = {name: f(PROMPT, random.Random(seed)) for name, f in kinds.items()}
        assert all(o is not None and o != PROMPT for o in out.values()), out
        dropped = out["aux_content_drop"].split()  # type: ignore[union-attr]
        assert len(dropped) == len(words) - 1
        lower = [w.lower() for w in dropped]
        assert {w.lower() for w in words if w.lower() not in lower} <= {"explain", "like", "five", "years"}
        inserted = out["aux_word_insert"].split()  # type: ignore[union-attr]
        assert len(inserted) == len(words) + 1 and inserted[0] == "Explain"
        swapped = out["aux_function_swap"].split()  # type: ignore[union-attr]
        diff = [(a, b) for a, b in zip(words, swapped, strict=True) if a != b]
        assert len(diff) == 1 and diff[0][1].lower() in FUNCTION_WORDS
        far = out["aux_far_swap"].split()  # type: ignore[union-attr]
        assert sorted(far) == sorted(words) and sum(a != b for a, b in zip(words, far, strict=True)) == 2
        split = out["aux_word_split"]
        assert split.replace(" ", "") == PROMPT.replace(" ", "") and len(split.split()) == len(words) + 1  # type: ignore
        inflected = out["aux_inflect"].split()  # type: ignore[union-attr]
        assert sum(a != b for a, b in zip(words, inflected, strict=True)) == 1
    assert all(f("Hi.", random.Random(0)) is None for name, f in kinds.items() if name != "aux_word_split")


def test_split_by_cluster() -> None:
    pairs = [(f"p{i}", f"c{i // 3}") for i in range(300)]  # 100 clusters of 3
    split = split_by_cluster(pairs, 0, 0.15, 0.25)
    assert set(split) == {f"c{i}" for i in range(100)}
    counts = {s: sum(1 for _, c in pairs if split[c] == s) for s in ("train", "validation", "test")}
    assert 60 <= counts["test"] <= 90 and 30 <= counts["validation"] <= 60 and counts["train"] >= 150
    assert split == split_by_cluster(pairs, 0, 0.15, 0.25)
    assert split != split_by_cluster(pairs, 1, 0.15, 0.25)
