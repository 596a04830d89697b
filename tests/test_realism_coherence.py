"""The sentence-coherence prototype (`benchmarks/_coherence.py`, measured, not shipped): sentence splitting, and each
later sentence's PMI with what came before."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from realize.data.models import LoadedModel
from realize.scorers.realism.lm_features import token_char_spans
from realize.scorers.realism.stats import text_stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _coherence import COHERENCE_FEATURES, coherence_rows, sentence_spans  # noqa: E402


def _pieces(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


def test_sentence_spans_split_after_end_marks_and_line_breaks() -> None:
    assert _pieces("Write a poem. Make it rhyme.") == ["Write a poem.", "Make it rhyme."]
    assert _pieces('He said "hi." Then he left!\nNext line') == ['He said "hi."', "Then he left!", "Next line"]
    assert _pieces("Version 2.5 is out") == ["Version 2.5 is out"]  # no white space after the point
    assert _pieces("  One.   ") == ["One."]
    assert _pieces("") == []


def test_coherence_pmi_compares_a_sentence_alone_with_in_context(tiny: LoadedModel) -> None:
    texts = ["Explain it like I am five.",  # one sentence: no later sentence
             "Explain the idea. Then give a short example of it.",
             "Explain the idea. Then give a short example of it. Explain the idea. Then give a short example of it."]
    stats = text_stats(tiny, texts)
    rows = coherence_rows(tiny, texts, stats)
    assert all(len(r) == len(COHERENCE_FEATURES) for r in rows)
    count, low, mean, gap = rows[0]
    assert count == pytest.approx(0.6931, abs=1e-3) and (low, mean, gap) == (0.0, 0.0, 0.0)
    assert rows[1][0] == pytest.approx(1.0986, abs=1e-3)
    # the PMI is the sentence's mean surprisal alone minus in context, recomputed here from the token statistics
    alone = text_stats(tiny, ["Then give a short example of it."])[0]
    spans = sentence_spans(texts[1])
    full = stats[1]
    tokens = token_char_spans(tiny.tokenizer, texts[1], full)
    inside = [full.surprisal[i - full.offset] for i, (s, _) in enumerate(tokens)
              if spans[1][0] <= s and i >= full.offset]
    m = min(len(inside), len(alone.surprisal))
    expected = sum(alone.surprisal[-m:]) / m - sum(inside[-m:]) / m
    assert rows[1][1] == pytest.approx(expected, abs=1e-4) and rows[1][2] == pytest.approx(expected, abs=1e-4)
    # three later sentences: min <= mean, and the gap is the lowest minus the mean of the others
    count3, low3, mean3, gap3 = rows[2]
    assert low3 <= mean3 + 1e-9 and gap3 <= 1e-9


def test_coherence_rows_use_the_cache(tiny: LoadedModel) -> None:
    texts = ["Explain the idea. Then give a short example of it."]
    stats = text_stats(tiny, texts)
    assert coherence_rows(tiny, texts, stats, use_cache=True) == coherence_rows(tiny, texts, stats)
