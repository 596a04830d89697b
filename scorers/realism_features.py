"""Features for the realism classifier: LM token statistics (global and local), word-level checks, character and
token-shape statistics, repetition, and optionally the same LM statistics under a second model (the judge).

Chosen to generalize across optimizers: none of them looks for a particular optimizer's artefacts, they measure
how ordinary English text looks (to the LM, to a word list and to the eye). LM statistics are taken with the prompt
*alone* (after BOS only), so the classifier does not depend on where a prompt is placed; surprisal, entropy and
rank are in nats / vocabulary positions (see `scorers.perplexity.token_statistics`).

Version 2 adds what perplexity sees but a mean hides, locally: the second-highest surprisal, where the highest
one sits, the largest rise between neighbouring tokens, the worst pair of neighbours, counts of tokens above 6 and
10 nats, the surprisal of ending the text there (a fragment does not end), and per word the LM surprisal minus
the word's unigram cost (`scorers.realism_words`); plus word checks (out-of-vocabulary words, fragmented words,
"the the"). The version-1 features keep their names and definitions, so a version-1 classifier can still be
evaluated on version-2 rows (by selecting its columns by name).

The judge block (`JUDGE_FEATURES`, names prefixed `judge_`) is the LM block computed under another model of
another architecture (Gemma-3-270M in bfloat16; see `scorers.realism.load_judge`), so the classifier does not rely
only on the model the search optimizes against; it leaves out the entropy features (`ENTROPY_FEATURES`), whose
full softmax over Gemma's 262k-token vocabulary would cost as much as the forward.

LM blocks are computed in batches and can be cached on disk per (model name, feature version, text) so that
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
from realize.scorers.realism_words import (
    WORD_FEATURES,
    split_words,
    token_spans,
    word_features,
    word_pieces,
    word_surprisal_excess,
)

logger = logging.getLogger(__name__)

FEATURE_VERSION = "2"  # bump when a feature's definition changes (invalidates caches and shipped weights)
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
V1_FEATURE_NAMES: tuple[str, ...] = LM_FEATURES + SHAPE_FEATURES + REPETITION_FEATURES
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
# The judge's block skips the entropy: on Gemma's 262k vocabulary the softmax costs as much as the forward.
JUDGE_BLOCK: tuple[str, ...] = tuple(n for n in LM_BLOCK if n not in ENTROPY_FEATURES)
JUDGE_FEATURES: tuple[str, ...] = tuple(f"judge_{n}" for n in JUDGE_BLOCK)
# FEATURE_NAMES: the columns `extract_features` returns without a judge; ALL_FEATURE_NAMES: with one.
FEATURE_NAMES: tuple[str, ...] = LM_BLOCK + SHAPE_FEATURES + REPETITION_FEATURES + WORD_FEATURES
BASE_FEATURE_NAMES = FEATURE_NAMES
ALL_FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES + JUDGE_FEATURES  # every feature this version defines
MAX_FEATURE_TOKENS = 256  # LM features read at most this many tokens of a prompt (prompts are short; bounds memory)
LOGIT_BUDGET = 200_000_000  # logits per forward (rows x tokens x vocabulary): ~4,000 tokens for SmolLM2, ~760 for Gemma

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


def local_lm_features(stats: TokenStats, end_surprisal: float, word_excess: Sequence[float]) -> list[float]:
    """LOCAL_LM_FEATURES of one text from its per-token surprisals, the end-of-text surprisal and the per-word
    excess surprisals (see `scorers.realism_words.word_surprisal_excess`)."""
    s = stats.surprisal.double()
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


def _lm_block(
    lm: LoadedModel, texts: Sequence[str], batch_size: int, show_progress: bool, with_entropy: bool = True
) -> torch.Tensor:
    """LM_BLOCK rows (N, len(LM_BLOCK)) of `texts` under `lm` (the prompt after BOS, then the end-of-text token);
    without entropy, the ENTROPY_FEATURES columns are meaningless (the judge drops them)."""
    tokenizer = lm.tokenizer
    encoded = [encode(tokenizer, t)[:MAX_FEATURE_TOKENS] for t in texts]
    bos = [] if tokenizer.bos_token_id is None else [int(tokenizer.bos_token_id)]
    eos = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    vocab = int(lm.model.get_output_embeddings().weight.shape[0])
    stats = token_statistics(lm, [bos] * len(texts), [ids + eos for ids in encoded], batch_size=batch_size,
                             max_batch_tokens=max(MAX_FEATURE_TOKENS + 2, LOGIT_BUDGET // vocab),
                             show_progress=show_progress, with_entropy=with_entropy)
    rows = []
    for text, ids, st in zip(texts, encoded, stats, strict=True):
        end = float(st.surprisal[-1]) if eos and st.surprisal.numel() else 0.0
        if eos:
            st = TokenStats(st.surprisal[:-1], st.entropy[:-1], st.rank[:-1])
        offset = len(ids) - st.surprisal.numel()  # 1 when the first token is not scored (no BOS)
        per_token: list[float | None] = [None] * offset + st.surprisal.tolist()
        words = split_words(text)
        if len(ids) == MAX_FEATURE_TOKENS:  # truncated: words past the kept tokens are not scored
            ids = encode(tokenizer, text)
        excess = word_surprisal_excess(words, word_pieces(words, token_spans(tokenizer, text, ids)), per_token)
        rows.append(lm_features(st) + local_lm_features(st, end, excess))
    return torch.tensor(rows, dtype=torch.float32).reshape(len(texts), len(LM_BLOCK))


def _text_block(lm: LoadedModel, texts: Sequence[str]) -> torch.Tensor:
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


def _cache_path(model_name: str, with_entropy: bool) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model_name) + ("" if with_entropy else "-judge")
    return cache_root() / "realism_features" / f"{safe}-v{FEATURE_VERSION}.json"


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _cached_lm_block(
    lm: LoadedModel, texts: Sequence[str], batch_size: int, use_cache: bool, show_progress: bool,
    with_entropy: bool = True,
) -> torch.Tensor:
    if not use_cache:
        return _lm_block(lm, texts, batch_size, show_progress, with_entropy)
    path = _cache_path(lm.name, with_entropy)
    cache: dict[str, list[float]] = {}
    if path.is_file():
        try:
            cache = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("feature cache %s unreadable; recomputing", path)
    missing = sorted({t for t in texts if _key(t) not in cache})
    if missing:
        logger.info("computing realism LM features under %s for %d texts", lm.name, len(missing))
        new = _lm_block(lm, missing, batch_size, show_progress, with_entropy)
        cache.update({_key(t): row for t, row in zip(missing, new.tolist(), strict=True)})
        write_text_atomic(path, json.dumps(cache))
    return torch.tensor([cache[_key(t)] for t in texts], dtype=torch.float32).reshape(len(texts), len(LM_BLOCK))


def extract_features(
    lm: LoadedModel,
    texts: Sequence[str],
    *,
    judge: LoadedModel | None = None,
    batch_size: int = 32,
    use_cache: bool = False,
    show_progress: bool = False,
) -> torch.Tensor:
    """Feature matrix for `texts` (non-empty strings): columns `FEATURE_NAMES` (no judge), or `ALL_FEATURE_NAMES`
    when a `judge` model is given (its LM block appended as `judge_*`).

    With `use_cache`, LM blocks are read from / added to a JSON cache per model under
    `cache_root()/realism_features/`, keyed by model name, FEATURE_VERSION and the text (written atomically).
    """
    if any(not t.strip() for t in texts):
        raise ValueError("texts: expected non-empty strings")
    blocks = [_cached_lm_block(lm, texts, batch_size, use_cache, show_progress), _text_block(lm, texts)]
    if judge is not None:
        block = _cached_lm_block(judge, texts, batch_size, use_cache, show_progress, with_entropy=False)
        blocks.append(select_columns(block, LM_BLOCK, JUDGE_BLOCK))
    return torch.cat(blocks, dim=1)


def select_columns(features: torch.Tensor, names: Sequence[str], wanted: Sequence[str]) -> torch.Tensor:
    """The columns `wanted` of a feature matrix whose columns are `names` (raises ValueError for a missing one)."""
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ValueError(f"features: columns {missing} not computed")
    index = {n: i for i, n in enumerate(names)}
    return features[:, [index[n] for n in wanted]]
