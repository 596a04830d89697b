"""Features for the realism classifier: LM token statistics, character and token-shape statistics, repetition.

Chosen to generalize across optimizers: none of them looks for a particular optimizer's artefacts, they measure
how ordinary English text looks (to the LM and to the eye). LM statistics are taken with the prompt *alone*
(after BOS only), so the classifier does not depend on where a prompt is placed; surprisal, entropy and rank are
in nats / vocabulary positions (see `scorers.perplexity.token_statistics`).

Features are computed in batches and can be cached on disk per (model name, feature version, text) so that
retraining does not repeat the LM forwards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import torch

from realize.data.atomic import write_text_atomic
from realize.data.chat import encode
from realize.data.models import LoadedModel, cache_root
from realize.scorers.perplexity import TokenStats, token_statistics

logger = logging.getLogger(__name__)

FEATURE_VERSION = "1"  # bump when a feature's definition changes (invalidates caches and shipped weights)
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
FEATURE_NAMES: tuple[str, ...] = LM_FEATURES + SHAPE_FEATURES + REPETITION_FEATURES

_WORD = re.compile(r"\S+")
_PUNCT_RUN = re.compile(r"[^\w\s]+")


def lm_features(stats: TokenStats) -> list[float]:
    """LM statistics of one text from its per-token statistics (zeros for a text with nothing scored)."""
    s, h, r = stats.surprisal.double(), stats.entropy.double(), stats.rank.double()
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


def _compute(lm: LoadedModel, texts: Sequence[str], batch_size: int, show_progress: bool) -> torch.Tensor:
    tokenizer = lm.tokenizer
    encoded = [encode(tokenizer, t) for t in texts]
    bos = [] if tokenizer.bos_token_id is None else [int(tokenizer.bos_token_id)]
    stats = token_statistics(lm, [bos] * len(texts), encoded, batch_size=batch_size, show_progress=show_progress)
    rows = []
    for text, ids, st in zip(texts, encoded, stats, strict=True):
        pieces = [tokenizer.decode([i]) for i in ids]
        rows.append(lm_features(st) + shape_features(text, pieces) + repetition_features(ids, text))
    return torch.tensor(rows, dtype=torch.float32).reshape(len(texts), len(FEATURE_NAMES))


def _cache_path(model_name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model_name)
    return cache_root() / "realism_features" / f"{safe}-v{FEATURE_VERSION}.json"


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def extract_features(
    lm: LoadedModel,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    use_cache: bool = False,
    show_progress: bool = False,
) -> torch.Tensor:
    """Feature matrix (N, len(FEATURE_NAMES)) for `texts` (non-empty strings).

    With `use_cache`, rows are read from / added to a JSON cache under `cache_root()/realism_features/`, keyed by
    model name, FEATURE_VERSION and the text (written atomically).
    """
    if any(not t.strip() for t in texts):
        raise ValueError("texts: expected non-empty strings")
    if not use_cache:
        return _compute(lm, texts, batch_size, show_progress)
    path = _cache_path(lm.name)
    cache: dict[str, list[float]] = {}
    if path.is_file():
        try:
            cache = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("feature cache %s unreadable; recomputing", path)
    missing = sorted({t for t in texts if _key(t) not in cache})
    if missing:
        logger.info("computing realism features for %d texts", len(missing))
        new = _compute(lm, missing, batch_size, show_progress)
        cache.update({_key(t): row for t, row in zip(missing, new.tolist(), strict=True)})
        write_text_atomic(path, json.dumps(cache))
    return torch.tensor([cache[_key(t)] for t in texts], dtype=torch.float32).reshape(len(texts), -1)
