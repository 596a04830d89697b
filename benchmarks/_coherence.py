"""A prototype realism feature block, measured and not shipped (`bench_realism_coherence.py`, README "Realism
classifier"): whether a prompt's sentences belong together, each later sentence read alone vs after the sentences
before it. It lives here, outside the package, because it did not earn a place in the judge.

A natural multi-sentence prompt is one text: a passage's second sentence continues its first, a question follows
its context, an instruction's follow-up refers back ("Write a poem. Make it rhyme."), so each later sentence reads
more easily after what came before (positive pointwise mutual information). Sentences spliced together from
unrelated prompts (a genetic search's crossover, an appended optimized suffix) read no more easily in context than
alone (near zero, or negative). One extra SmolLM2 forward per later sentence, read alone after BOS.

`COHERENCE_FEATURES`, per prompt:
- `sent_count`: log(1 + number of sentences);
- `sent_pmi_min`, `sent_pmi_mean`: over the sentences after the first (with at least `MIN_SENTENCE_TOKENS` tokens),
  mean surprisal alone minus mean surprisal in context (nats per token, the same tokens compared); 0 when the prompt
  has no such sentence (`sent_count` tells the two apart);
- `sent_pmi_first_gap`: the PMI of the sentence with the smallest PMI minus the mean of the others (0 with fewer
  than two later sentences): one sentence that does not belong among sentences that do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from realize.data.models import LoadedModel
from realize.scorers.realism.lm_features import token_char_spans
from realize.scorers.realism.stats import TextStats, text_stats

COHERENCE_FEATURES = ("sent_count", "sent_pmi_min", "sent_pmi_mean", "sent_pmi_first_gap")
MIN_SENTENCE_TOKENS = 3  # shorter later sentences ("Why?") are too short to measure
_SENTENCE_END = re.compile(r"([.!?][\"')\]]*)\s+|\n+")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text`: split after . ! ? (and closing quotes or brackets) followed by
    white space, and at line breaks; pieces without their surrounding white space, empty ones dropped."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end(1) if m.group(1) else m.start()
        spans.append((start, end))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        piece = text[a:b]
        if piece.strip():
            a += len(piece) - len(piece.lstrip())
            out.append((a, a + len(piece.strip())))
    return out


def _later_sentences(tokenizer, text: str, stats: TextStats) -> tuple[int, list[tuple[str, list[float]]]]:
    """(number of sentences, [(sentence text, its tokens' surprisals in context)] for each sentence after the first
    with enough tokens)."""
    spans = sentence_spans(text)
    if len(spans) < 2:
        return len(spans), []
    tokens = token_char_spans(tokenizer, text, stats)[: len(stats.surprisal) + stats.offset]
    out = []
    for a, b in spans[1:]:
        inside = [i - stats.offset for i, (s, _) in enumerate(tokens) if a <= s < b and i >= stats.offset]
        if len(inside) >= MIN_SENTENCE_TOKENS:
            out.append((text[a:b], [stats.surprisal[i] for i in inside]))
    return len(spans), out


def coherence_rows(lm: LoadedModel, texts: Sequence[str], stats: Sequence[TextStats], *, batch_size: int = 32,
                   use_cache: bool = False) -> list[list[float]]:
    """COHERENCE_FEATURES per prompt (`stats`: the prompts' own `TextStats` under `lm`)."""
    later = [_later_sentences(lm.tokenizer, t, st) for t, st in zip(texts, stats, strict=True)]
    wanted = sorted({s for _, row in later for s, _ in row})
    alone = dict(zip(wanted, text_stats(lm, wanted, with_entropy=False, batch_size=batch_size,
                                        use_cache=use_cache), strict=True)) if wanted else {}
    out = []
    for count, row in later:
        pmis = []
        for sentence, in_context in row:
            a = list(alone[sentence].surprisal)
            m = min(len(a), len(in_context))  # the same tokens: a sentence's first piece may tokenize differently
            if m:
                pmis.append(sum(a[len(a) - m:]) / m - sum(in_context[len(in_context) - m:]) / m)
        if not pmis:
            out.append([math.log1p(count), 0.0, 0.0, 0.0])
            continue
        low = min(pmis)
        rest = sorted(pmis)[1:]
        gap = low - sum(rest) / len(rest) if rest else 0.0
        out.append([math.log1p(count), low, sum(pmis) / len(pmis), gap])
    return out
