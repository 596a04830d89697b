"""Features that see where a prompt turns: change points in the LM's surprisal and entropy, the place where the
text could have ended, how the rest reads with and without what came before, and where two LMs disagree.

An optimized suffix appended to a natural instruction ("Write a poem about autumn. listed under D.21 Losses of
business plans ...") is locally fluent, so whole-prompt perplexity misses it; but the prompt *turns*: the LM
expected the text to end after the instruction, the surprisal level changes there, the suffix reads no more
easily after the instruction than alone, and a suffix optimized for fluency under one LM is less fluent under
another. Per LM (`TURN_BLOCK`, under the judge `JUDGE_TURN_BLOCK`):

- CUSUM change point of the surprisal sequence (the first token left out: it has no context): the split k that
  maximizes the standardized mean difference after - before, `d * sqrt(k (n - k) / n) / (std + 1)`; its value
  (`cp_up_stat`), where it sits (`cp_up_pos`, 0..1), the mean surprisal after and before it, the tokens after it;
  the largest *drop* too (`cp_down_stat`); the same CUSUM on the entropy (SmolLM2 only);
- the interior end: the token after which the LM most expected the text to end, with at least two tokens still to
  come (`interior_end_logprob`, its position), and the surprisal of what follows (first token, mean);
- (`TAIL_FEATURES`, one extra SmolLM2 forward of the part after the interior end, read alone) `tail_pmi`: mean
  surprisal of that part alone minus in context. Natural follow-ups read more easily after their instruction
  (positive); an unrelated suffix does not (near zero).

Two-LM agreement (`AGREE_FEATURES`): per word, the surprisal under the judge minus under SmolLM2 (each summed over
the word's pieces in its own tokenizer); their correlation over words, mean, max, and the mean after the SmolLM2
change point minus before it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from realize.data.models import LoadedModel
from realize.scorers.perplexity import token_statistics
from realize.scorers.realism.lm_features import per_token, token_char_spans
from realize.scorers.realism.stats import TextStats
from realize.scorers.realism.words import split_words, word_pieces

CUSUM_FEATURES = ("cp_up_stat", "cp_up_pos", "cp_up_after_mean", "cp_up_before_mean", "cp_up_after_len",
                  "cp_down_stat")
ENTROPY_TURN_FEATURES = ("cp_entropy_up_stat", "cp_entropy_after_mean")
END_FEATURES = ("interior_end_logprob", "interior_end_pos", "after_end_first_surprisal", "after_end_mean_surprisal")
TURN_BLOCK: tuple[str, ...] = CUSUM_FEATURES + ENTROPY_TURN_FEATURES + END_FEATURES  # under SmolLM2
JUDGE_TURN_BLOCK: tuple[str, ...] = CUSUM_FEATURES + END_FEATURES  # under the judge (no entropy)
TAIL_FEATURES = ("tail_pmi",)
AGREE_FEATURES = ("agree_word_corr", "agree_mean_diff", "agree_max_diff", "agree_after_cp_diff")
NO_END = -20.0  # interior_end_logprob of a prompt too short to have an interior end


def cusum(x: Sequence[float], min_segment: int = 2) -> tuple[float, int, float]:
    """(largest standardized rise after - before, the split index k of that rise (first index after), largest
    standardized drop) over splits with at least `min_segment` values on each side; (0, len, 0) when too short."""
    n = len(x)
    if n < 2 * min_segment:
        return 0.0, n, 0.0
    v = torch.tensor(list(x), dtype=torch.float64)
    csum = torch.cumsum(v, 0)
    k = torch.arange(min_segment, n - min_segment + 1, dtype=torch.float64)
    before = csum[k.long() - 1] / k
    after = (csum[-1] - csum[k.long() - 1]) / (n - k)
    stat = (after - before) * torch.sqrt(k * (n - k) / n) / (float(v.std(unbiased=False)) + 1.0)
    j = int(torch.argmax(stat))
    return float(stat[j]), int(k[j]), float((-stat).max())


def change_point(stats: TextStats) -> tuple[float, int, float]:
    """`cusum` of the surprisals after the first scored token; the split as an index into `stats.surprisal`."""
    up, k, down = cusum(stats.surprisal[1:])
    return up, k + 1, down


def interior_end(stats: TextStats) -> int | None:
    """Index (into `stats.surprisal`) of the token after which the LM most expected the text to end, with at least
    two scored tokens after it; None for a prompt too short."""
    n = len(stats.end_after)
    if n < 4:
        return None
    return max(range(1, n - 2), key=lambda j: stats.end_after[j])


def turn_row(stats: TextStats, *, with_entropy: bool) -> list[float]:
    """TURN_BLOCK (with_entropy) or JUDGE_TURN_BLOCK of one prompt."""
    s = list(stats.surprisal)
    n = len(s)
    up, k, down = change_point(stats)
    after, before = s[k:], s[1:k]
    row = [up, (k + stats.offset) / max(n + stats.offset, 1), _mean(after), _mean(before),
           math.log1p(len(after)), down]
    if with_entropy:
        h = list(stats.entropy)
        e_up, e_k, _ = cusum(h[1:])
        row += [e_up, _mean(h[e_k + 1:])]
    j = interior_end(stats)
    if j is None:
        row += [NO_END, 1.0, 0.0, 0.0]
    else:
        row += [stats.end_after[j], (j + 1 + stats.offset) / (n + stats.offset), s[j + 1], _mean(s[j + 1:])]
    return row


def _mean(x: Sequence[float]) -> float:
    return sum(x) / len(x) if x else 0.0


def tail_ids(stats: TextStats) -> list[int]:
    """The prompt's tokens after its interior end ([] when it has none)."""
    j = interior_end(stats)
    return [] if j is None else list(stats.ids[j + 1 + stats.offset:])


def tail_rows(lm: LoadedModel, stats: Sequence[TextStats], *, batch_size: int = 32) -> list[list[float]]:
    """TAIL_FEATURES per prompt: one forward of each tail read alone (after BOS)."""
    tails = [tail_ids(st) for st in stats]
    bos = [] if lm.tokenizer.bos_token_id is None else [int(lm.tokenizer.bos_token_id)]
    todo = [i for i, t in enumerate(tails) if t]
    alone = token_statistics(lm, [bos] * len(todo), [tails[i] for i in todo], batch_size=batch_size,
                             with_entropy=False) if todo else []
    out = [[0.0] for _ in stats]
    for i, st in zip(todo, alone, strict=True):
        j = interior_end(stats[i])
        in_context = list(stats[i].surprisal[j + 1:])  # type: ignore[operator]
        a = st.surprisal.tolist()
        m = min(len(a), len(in_context))
        if m:  # compare the same tokens (without BOS the first tail token is unscored alone)
            out[i] = [_mean(a[len(a) - m:]) - _mean(in_context[len(in_context) - m:])]
    return out


def word_surprisals(tokenizer, text: str, stats: TextStats) -> list[float | None]:
    """Per word of `split_words(text)`: the summed surprisal of its pieces (None when a piece is unscored)."""
    words = split_words(text)
    pieces = word_pieces(words, token_char_spans(tokenizer, text, stats))
    values = per_token(stats)
    out: list[float | None] = []
    for idx in pieces:
        got = [values[i] for i in idx if i < len(values)]
        out.append(sum(got) if idx and len(got) == len(idx) and all(v is not None for v in got) else None)  # type: ignore
    return out


def agree_row(text: str, primary: tuple[object, TextStats], judge: tuple[object, TextStats]) -> list[float]:
    """AGREE_FEATURES of one prompt from (tokenizer, stats) under SmolLM2 and under the judge."""
    a = word_surprisals(primary[0], text, primary[1])
    b = word_surprisals(judge[0], text, judge[1])
    words = split_words(text)
    both = [(w, x, y) for w, x, y in zip(words, a, b, strict=True) if x is not None and y is not None]
    if not both:
        return [0.0, 0.0, 0.0, 0.0]
    diff = [y - x for _, x, y in both]
    corr = 0.0
    if len(both) >= 3:
        xs = torch.tensor([x for _, x, _ in both], dtype=torch.float64)
        ys = torch.tensor([y for _, _, y in both], dtype=torch.float64)
        if float(xs.std()) > 0 and float(ys.std()) > 0:
            corr = float(torch.corrcoef(torch.stack([xs, ys]))[0, 1])
    _, k, _ = change_point(primary[1])
    spans = token_char_spans(primary[0], text, primary[1])
    token = min(k + primary[1].offset, len(spans) - 1)
    cut = spans[token][0] if spans and k < len(primary[1].surprisal) else len(text)
    after = [d for (w, _, _), d in zip(both, diff, strict=True) if w.start >= cut]
    before = [d for (w, _, _), d in zip(both, diff, strict=True) if w.start < cut]
    return [corr, _mean(diff), max(diff), _mean(after) - _mean(before) if after and before else 0.0]


def change_point_char(tokenizer, text: str, stats: TextStats) -> int | None:
    """Character where the SmolLM2 change point's segment starts (for reports: where the judge sees a turn)."""
    _, k, _ = change_point(stats)
    if k >= len(stats.surprisal):
        return None
    spans = token_char_spans(tokenizer, text, stats)
    token = k + stats.offset
    return spans[token][0] if token < len(spans) else None
