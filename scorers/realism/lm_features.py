"""LM features of one prompt from its token statistics (`realism.stats.TextStats`): what perplexity sees, and what
a mean hides.

- `LM_FEATURES` (version 1): mean / max / std of surprisal, worst 10-token window, surprisal minus entropy ("more
  surprising than the LM expected"), entropy, shares of tokens above 4 / 7 / 10 nats, rank statistics;
- `LOCAL_LM_FEATURES` (version 2): the second-highest surprisal, where the highest sits, the largest rise between
  neighbours, the worst pair of neighbours, counts above 6 and 10 nats, the highest surprisal after the first
  token, the surprisal of ending the text there (a fragment does not end), and per word the LM surprisal minus the
  word's unigram cost (`realism.words`).

Definitions are frozen by name: a classifier trained on an older feature version selects its columns by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from realize.data.chat import encode
from realize.scorers.realism.stats import MAX_FEATURE_TOKENS, TextStats
from realize.scorers.realism.words import split_words, token_spans, word_pieces, word_surprisal_excess

WINDOW = 10
SURPRISAL_THRESHOLDS = (4.0, 7.0, 10.0)  # nats

LM_FEATURES = (
    "mean_surprisal",
    "max_surprisal",
    "std_surprisal",
    "log_worst_window_ppl",
    "mean_excess_surprisal",  # mean of surprisal - entropy: how much more surprising than the LM expected
    "max_excess_surprisal",
    "mean_entropy",
    "frac_surprisal_gt_4",
    "frac_surprisal_gt_7",
    "frac_surprisal_gt_10",
    "frac_rank_top1",
    "frac_rank_gt_100",
    "mean_log_rank",
)
LOCAL_LM_FEATURES = (
    "second_max_surprisal",  # the second-highest token surprisal (one odd token vs. two)
    "max_surprisal_pos",  # relative position (0 first .. 1 last) of the highest surprisal
    "max_surprisal_rise",  # largest increase of surprisal from one token to the next
    "max_pair_surprisal",  # largest surprisal summed over two neighbouring tokens
    "n_surprisal_gt_6",  # tokens above 6 nats (counts, not fractions: one bad word in a long prompt)
    "n_surprisal_gt_10",
    "max_surprisal_after_first",  # the first token has no context; the highest surprisal after it
    "end_surprisal",  # -log p(end of text | prompt): high for a fragment
    "max_word_excess",  # max over words of (LM surprisal of the word - its unigram cost)
    "mean_word_excess",
)
LM_BLOCK: tuple[str, ...] = LM_FEATURES + LOCAL_LM_FEATURES  # computed per LM (primary and judge)
ENTROPY_FEATURES = ("mean_excess_surprisal", "max_excess_surprisal", "mean_entropy")  # need the full softmax


def lm_features(surprisal: torch.Tensor, entropy: torch.Tensor, rank: torch.Tensor) -> list[float]:
    """LM_FEATURES of one text from its per-token statistics (zeros for a text with nothing scored)."""
    s, h, r = surprisal.double(), entropy.double(), rank.double()
    n = s.numel()
    if n == 0:
        return [0.0] * len(LM_FEATURES)
    windowed = s.unfold(0, WINDOW, 1).mean(dim=1).max() if n > WINDOW else s.mean()
    excess = s - h
    return [
        float(s.mean()),
        float(s.max()),
        float(s.std(unbiased=False)),
        float(windowed),
        float(excess.mean()),
        float(excess.max()),
        float(h.mean()),
        *[float((s > t).double().mean()) for t in SURPRISAL_THRESHOLDS],
        float((r == 0).double().mean()),
        float((r > 100).double().mean()),
        float(torch.log1p(r).mean()),
    ]


def local_lm_features(surprisal: torch.Tensor, end_surprisal: float, word_excess: Sequence[float]) -> list[float]:
    """LOCAL_LM_FEATURES of one text from its per-token surprisals, the end-of-text surprisal and the per-word
    excess surprisals (see `realism.words.word_surprisal_excess`)."""
    s = surprisal.double()
    n = s.numel()
    if n == 0:
        return [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, end_surprisal, 0.0, 0.0]
    top = torch.topk(s, min(2, n)).values
    rise = float((s[1:] - s[:-1]).max()) if n > 1 else 0.0
    pair = float((s[1:] + s[:-1]).max()) if n > 1 else float(s[0])
    return [
        float(top[-1]) if n > 1 else 0.0,
        float(torch.argmax(s)) / max(n - 1, 1),
        rise,
        pair,
        float((s > 6.0).sum()),
        float((s > 10.0).sum()),
        float(s[1:].max()) if n > 1 else 0.0,
        end_surprisal,
        max(word_excess, default=0.0),
        sum(word_excess) / len(word_excess) if word_excess else 0.0,
    ]


def token_char_spans(tokenizer, text: str, stats: TextStats) -> list[tuple[int, int]]:
    """Character span of each of the prompt's tokens (all of them when the prompt was truncated)."""
    ids = list(stats.ids)
    if len(ids) == MAX_FEATURE_TOKENS:  # truncated: words past the kept tokens are not scored
        ids = encode(tokenizer, text)
    return token_spans(tokenizer, text, ids)


def per_token(stats: TextStats) -> list[float | None]:
    """Surprisal per prompt token (None for the unscored first token without BOS)."""
    return [None] * stats.offset + list(stats.surprisal)


def lm_block_row(tokenizer, text: str, stats: TextStats) -> list[float]:
    """LM_BLOCK of one prompt (for the judge, the entropy columns are meaningless and dropped by the caller)."""
    s, h, r = (torch.tensor(stats.surprisal), torch.tensor(stats.entropy), torch.tensor(stats.rank))
    words = split_words(text)
    spans = token_char_spans(tokenizer, text, stats)
    values = per_token(stats)
    values += [None] * (len(spans) - len(values))  # a truncated prompt: words past the kept tokens are unscored
    excess = word_surprisal_excess(words, word_pieces(words, spans), values)
    return lm_features(s, h, r) + local_lm_features(s, stats.end_surprisal, excess)
