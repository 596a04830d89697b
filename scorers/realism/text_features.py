"""Text features of a prompt, no forward: character and token-shape statistics, repetition, and word checks
(`realism.words`: out-of-vocabulary words, fragmented words, "the the", function-word share)."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence

import torch

from realize.data.chat import encode
from realize.data.models import LoadedModel
from realize.scorers.realism.words import WORD_FEATURES, split_words, token_spans, word_features, word_pieces

SHAPE_FEATURES = (
    "log_n_tokens",
    "log_n_chars",
    "chars_per_token",
    "frac_word_initial_tokens",
    "frac_single_char_tokens",
    "frac_alpha",
    "frac_space",
    "frac_digit",
    "frac_punct",
    "frac_non_ascii",
    "frac_odd_unicode",
    "frac_upper_in_letters",
    "inner_case_changes_per_word",
    "max_punct_run",
    "frac_words_alpha",
    "mean_word_length",
    "starts_upper",
    "ends_sentence_punct",
    "frac_vowel_in_letters",
)
REPETITION_FEATURES = ("frac_repeated_tokens", "max_token_count_frac", "frac_repeated_word_bigrams")
TEXT_BLOCK: tuple[str, ...] = SHAPE_FEATURES + REPETITION_FEATURES + WORD_FEATURES

_WORD = re.compile(r"\S+")
_PUNCT_RUN = re.compile(r"[^\w\s]+")


def _odd(ch: str) -> bool:
    """Control/format/private/unassigned characters, combining marks, and letters outside Latin script."""
    cat = unicodedata.category(ch)
    if cat[0] in "CM" and ch not in "\n\t":
        return True
    if cat[0] == "L" and ord(ch) > 0x24F:  # beyond Latin Extended-B
        return True
    return cat in ("So", "Sk")


def shape_features(text: str, token_strings: Sequence[str]) -> list[float]:
    """Character, word and token-shape statistics; `token_strings` are the decoded tokens of `text`."""
    n_chars = max(len(text), 1)
    letters = [c for c in text if c.isalpha()]
    n_letters = max(len(letters), 1)
    words = _WORD.findall(text)
    n_words = max(len(words), 1)
    n_tok = max(len(token_strings), 1)
    inner_changes = sum(
        sum(1 for a, b in zip(w, w[1:], strict=False) if a.islower() and b.isupper()) for w in words
    )
    runs = [len(m) for m in _PUNCT_RUN.findall(text)]
    stripped = text.strip()
    return [
        math.log1p(len(token_strings)),
        math.log1p(len(text)),
        sum(len(t) for t in token_strings) / n_tok,
        sum(1 for t in token_strings if t[:1].isspace()) / n_tok,
        sum(1 for t in token_strings if len(t.strip()) <= 1) / n_tok,
        len(letters) / n_chars,
        sum(c.isspace() for c in text) / n_chars,
        sum(c.isdigit() for c in text) / n_chars,
        sum(1 for c in text if not c.isalnum() and not c.isspace()) / n_chars,
        sum(1 for c in text if ord(c) > 127) / n_chars,
        sum(1 for c in text if _odd(c)) / n_chars,
        sum(c.isupper() for c in letters) / n_letters,
        inner_changes / n_words,
        float(max(runs, default=0)),
        sum(1 for w in words if w.strip(".,;:!?'\"()").isalpha()) / n_words,
        sum(len(w) for w in words) / n_words,
        float(stripped[:1].isupper()),
        float(stripped[-1:] in (".", "?", "!", ":", '"', ")")),
        sum(1 for c in letters if c.lower() in "aeiouy") / n_letters,
    ]


def repetition_features(token_ids: Sequence[int], text: str) -> list[float]:
    n = max(len(token_ids), 1)
    counts: dict[int, int] = {}
    for t in token_ids:
        counts[t] = counts.get(t, 0) + 1
    words = [w.lower() for w in _WORD.findall(text)]
    bigrams = list(zip(words, words[1:], strict=False))
    return [
        1.0 - len(counts) / n if token_ids else 0.0,
        max(counts.values(), default=0) / n,
        1.0 - len(set(bigrams)) / len(bigrams) if bigrams else 0.0,
    ]



def text_block(lm: LoadedModel, texts: Sequence[str]) -> torch.Tensor:
    """SHAPE, REPETITION and WORD features (no forward; word pieces under the primary tokenizer)."""
    tokenizer = lm.tokenizer
    rows = []
    for text in texts:
        ids = encode(tokenizer, text)
        pieces = [tokenizer.decode([i]) for i in ids]
        words = split_words(text)
        rows.append(shape_features(text, pieces) + repetition_features(ids, text)
                    + word_features(words, word_pieces(words, token_spans(tokenizer, text, ids))))
    width = len(SHAPE_FEATURES) + len(REPETITION_FEATURES) + len(WORD_FEATURES)
    return torch.tensor(rows, dtype=torch.float32).reshape(len(texts), width)

