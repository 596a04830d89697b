"""Word-level view of a prompt for the realism classifier: words, their token pieces, and how common they are.

A near-natural corruption often hides inside one word: a stray subword glued on ("yotained", "sadellectual"), two
words merged ("itlike"), or a common word where it does not belong ("like a recently child"). Token statistics
alone smear these over pieces; here every word gets

- its token pieces (tokens whose character span overlaps the word; the tokenizer's offset mapping),
- its unigram cost, -ln p(word) from `wordfreq`'s English frequencies (Zipf scale; a word wordfreq does not know
  costs as much as a 1-in-10^9 word),

so that the classifier can ask "is this a word at all" (out-of-vocabulary words, words split into many pieces) and
"is this word more surprising here than its rarity explains" (LM surprisal of the word minus its unigram cost: high
for a common word in the wrong place, near zero for a rare but fitting word).

Words are runs of ASCII letters with inner apostrophes ("don't"); numbers and punctuation are not words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from wordfreq import zipf_frequency

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
LN10 = math.log(10.0)
OOV_ZIPF = 1.0  # a word under this Zipf frequency (once per 10^8 words) counts as out of vocabulary
MAX_ZIPF_COST = 9.0 * LN10  # cost of a word wordfreq does not know (Zipf 0)

WORD_FEATURES = (
    "frac_oov_words",  # share of words wordfreq rates under OOV_ZIPF
    "n_oov_words",
    "min_word_zipf",  # the rarest word's Zipf frequency (0 for an unknown word)
    "max_pieces_per_word",  # tokens of the most fragmented word (under the primary tokenizer)
    "frac_multi_piece_words",  # share of words split into two or more tokens
    "n_adjacent_repeated_words",  # "the the"
    "frac_function_words",  # share of words among the most common English function words
)

# The commonest English function words (articles, pronouns, prepositions, auxiliaries, conjunctions).
FUNCTION_WORDS = frozenset(
    "a an the i you he she it we they me him her us them my your his its our their this that these those "
    "is am are was were be been being do does did have has had will would can could should may might must "
    "to of in on at for with by from about as into like than and or but if so not no".split()
)


@dataclass(frozen=True)
class Word:
    text: str
    start: int  # character span in the prompt
    end: int

    @property
    def zipf(self) -> float:
        return word_zipf(self.text)

    @property
    def unigram_cost(self) -> float:
        """-ln p(word) in nats from its Zipf frequency (p = 10^(zipf - 9))."""
        return (9.0 - self.zipf) * LN10


@lru_cache(maxsize=200_000)
def word_zipf(word: str) -> float:
    return float(zipf_frequency(word.lower(), "en"))


def split_words(text: str) -> list[Word]:
    return [Word(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def token_spans(tokenizer, text: str, ids: Sequence[int]) -> list[tuple[int, int]]:
    """Character span of each token of `text` (ids = `encode(tokenizer, text)`). Uses the fast tokenizer's offset
    mapping; when it is unavailable or disagrees with `ids`, spans come from decoding growing prefixes."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if list(enc["input_ids"]) == list(ids):
            return [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    spans, prev = [], 0
    for k in range(len(ids)):
        end = min(len(tokenizer.decode(list(ids[: k + 1]))), len(text))
        spans.append((prev, max(end, prev)))
        prev = max(end, prev)
    return spans


def word_pieces(words: Sequence[Word], spans: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Indices of the tokens overlapping each word (a token overlapping two words counts for both)."""
    out: list[list[int]] = [[] for _ in words]
    j = 0
    for w_index, word in enumerate(words):
        while j < len(spans) and spans[j][1] <= word.start:
            j += 1
        k = j
        while k < len(spans) and spans[k][0] < word.end:
            if spans[k][1] > word.start:
                out[w_index].append(k)
            k += 1
    return out


def word_features(words: Sequence[Word], pieces: Sequence[Sequence[int]]) -> list[float]:
    """WORD_FEATURES of one prompt (zeros / neutral values for a prompt without words)."""
    if not words:
        return [0.0, 0.0, 7.0, 0.0, 0.0, 0.0, 0.0]
    zipfs = [w.zipf for w in words]
    n = len(words)
    lowered = [w.text.lower() for w in words]
    oov = sum(z < OOV_ZIPF for z in zipfs)
    counts = [len(p) for p in pieces]
    return [
        oov / n,
        float(oov),
        min(zipfs),
        float(max(counts, default=0)),
        sum(c >= 2 for c in counts) / n,
        float(sum(a == b for a, b in zip(lowered, lowered[1:], strict=False))),
        sum(w in FUNCTION_WORDS for w in lowered) / n,
    ]


def word_surprisal_excess(
    words: Sequence[Word], pieces: Sequence[Sequence[int]], token_surprisal: Sequence[float | None]
) -> list[float]:
    """Per word: LM surprisal of its pieces (summed) minus its unigram cost, in nats. Words whose pieces were not
    all scored (the first token without BOS) are skipped."""
    out = []
    for word, idx in zip(words, pieces, strict=True):
        values = [token_surprisal[i] for i in idx]
        if idx and all(v is not None for v in values):
            out.append(sum(values) - min(word.unigram_cost, MAX_ZIPF_COST))  # type: ignore[arg-type]
    return out
