"""Per-token statistics of a prompt under one LM: the raw material of every LM feature, computed once and cached.

A prompt is read alone, after BOS only (so features do not depend on where the prompt is placed), then the
end-of-text token. For each of its tokens (at most `MAX_FEATURE_TOKENS`): surprisal -log p (nats), entropy of the
next-token distribution (nats; zeros for the judge, whose 262k-token softmax would cost as much as the forward),
rank (0 = the LM's top token), and `end_after`: log p(end of text | the prompt up to and including that token),
"the text could have ended here"; plus `end_surprisal`, -log p(end of text | the whole prompt). A tokenizer without
BOS leaves the first token unscored (`offset` 1).

The cache (`cache_root()/realism_stats/<model>-s<STATS_VERSION>[-judge].json`, keyed by the text's sha256) keeps
these arrays, not features: feature definitions can change without repeating the forwards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from realize.data.atomic import write_text_atomic
from realize.data.chat import encode
from realize.data.models import LoadedModel, cache_root
from realize.scorers.perplexity import token_statistics

logger = logging.getLogger(__name__)

STATS_VERSION = "2"  # bump when what is stored changes (invalidates the cache); 2: the judge's rows batch-independent
MAX_FEATURE_TOKENS = 256  # LM features read at most this many tokens of a prompt (prompts are short; bounds memory)
LOGIT_BUDGET = 200_000_000  # logits per forward (rows x tokens x vocabulary): ~4,000 tokens for SmolLM2, ~760 for Gemma


@dataclass(frozen=True)
class TextStats:
    """Token statistics of one prompt under one LM (see the module docstring). Lists are per scored token."""

    ids: tuple[int, ...]  # the prompt's tokens (truncated to MAX_FEATURE_TOKENS)
    offset: int  # tokens at the start that are not scored (1 without BOS, else 0)
    surprisal: tuple[float, ...]
    entropy: tuple[float, ...]
    rank: tuple[float, ...]
    end_after: tuple[float, ...]  # log p(end of text) after each scored token
    end_surprisal: float  # -log p(end of text | whole prompt); 0 when the tokenizer has no end token


def _compute(lm: LoadedModel, texts: Sequence[str], batch_size: int, show_progress: bool,
             with_entropy: bool) -> list[TextStats]:
    tokenizer = lm.tokenizer
    encoded = [encode(tokenizer, t)[:MAX_FEATURE_TOKENS] for t in texts]
    bos = [] if tokenizer.bos_token_id is None else [int(tokenizer.bos_token_id)]
    eos = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    vocab = int(lm.model.get_output_embeddings().weight.shape[0])
    stats = token_statistics(lm, [bos] * len(texts), [ids + eos for ids in encoded], batch_size=batch_size,
                             max_batch_tokens=max(MAX_FEATURE_TOKENS + 2, LOGIT_BUDGET // vocab),
                             show_progress=show_progress, with_entropy=with_entropy, extra_ids=eos)
    out = []
    for ids, st in zip(encoded, stats, strict=True):
        s, h, r = st.surprisal.tolist(), st.entropy.tolist(), st.rank.tolist()
        end_lp = st.extra[:, 0].tolist() if eos and st.extra is not None and st.extra.shape[1] else []
        end = float(s[-1]) if eos and s else 0.0
        if eos:
            s, h, r = s[:-1], h[:-1], r[:-1]
        # end_lp[t] = log p(end | tokens before target t); "after token j" is end_lp[j + 1] (the last = -end)
        offset = len(ids) - len(s)
        after = end_lp[1:] if eos else [0.0] * len(s)
        after = after[len(after) - len(s):] if len(after) >= len(s) else [0.0] * len(s)
        out.append(TextStats(tuple(ids), offset, tuple(s), tuple(h), tuple(r), tuple(after), end))
    return out


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def cached(name: str, texts: Sequence[str], compute: Callable[[list[str]], list[list]]) -> list[list]:
    """One JSON-serializable row per text from the cache file `cache_root()/realism_stats/<name>.json`, computing
    (`compute(missing texts)`) and adding only the texts it lacks (written atomically)."""
    path = cache_root() / "realism_stats" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.json"
    cache: dict[str, list] = {}
    if path.is_file():
        try:
            cache = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("token statistics cache %s unreadable; recomputing", path)
    missing = sorted({t for t in texts if _key(t) not in cache})
    if missing:
        logger.info("computing %s for %d texts", name, len(missing))
        cache.update({_key(t): row for t, row in zip(missing, compute(missing), strict=True)})
        write_text_atomic(path, json.dumps(cache))
    return [cache[_key(t)] for t in texts]


def text_stats(lm: LoadedModel, texts: Sequence[str], *, with_entropy: bool = True, batch_size: int = 32,
               use_cache: bool = False, show_progress: bool = False) -> list[TextStats]:
    """`TextStats` of each text under `lm` (non-empty strings). With `use_cache`, read from / added to the JSON
    cache of this model (`cached`)."""
    if not use_cache:
        return _compute(lm, texts, batch_size, show_progress, with_entropy)

    def compute(missing: list[str]) -> list[list]:
        return [[list(st.ids), st.offset, list(st.surprisal), list(st.entropy), list(st.rank), list(st.end_after),
                 st.end_surprisal] for st in _compute(lm, missing, batch_size, show_progress, with_entropy)]

    name = f"{lm.name}{'' if with_entropy else '-judge'}-s{STATS_VERSION}"
    return [TextStats(tuple(ids), offset, tuple(s), tuple(h), tuple(r), tuple(after), end)
            for ids, offset, s, h, r, after, end in cached(name, texts, compute)]
