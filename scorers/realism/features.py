"""The realism classifier's feature matrix: which features exist, under which names, and how they are computed.

Chosen to generalize across optimizers: none looks for one optimizer's artefacts; they measure how ordinary English
text looks to an LM, to a word list and to the eye, and where a prompt turns. LM statistics are taken with the
prompt *alone* (after BOS only), so features do not depend on where a prompt is placed (`realism.stats`).

Blocks (columns in this order):
- `LM_BLOCK` (`realism.lm_features`): token statistics under SmolLM2, global and local (version 1 and 2);
- `TEXT_BLOCK` (`realism.text_features`): character / token-shape statistics, repetition, word checks;
- `TURN_BLOCK` + `TAIL_FEATURES` (`realism.turns`, version 3): change points of surprisal and entropy, the interior
  end and what follows it, the tail read alone;
- with a judge (Gemma-3-270M in bfloat16, another architecture, so the classifier does not rely only on the model
  the search optimizes against): `JUDGE_FEATURES` (the LM block without the entropy features, whose softmax over
  Gemma's 262k-token vocabulary would cost as much as the forward), `JUDGE_TURN_FEATURES`, and `AGREE_FEATURES`
  (where the two LMs disagree, per word).

Definitions are frozen by name: version 3 adds columns and changes none, so weights of versions 2 and 3 load
(`COMPATIBLE_VERSIONS`) and a classifier selects its columns by name (`select_columns`). Token statistics are cached
on disk per (model, text) when asked (`realism.stats`), so retraining does not repeat the forwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from realize.data.models import LoadedModel
from realize.scorers.realism.lm_features import ENTROPY_FEATURES, LM_BLOCK, lm_block_row
from realize.scorers.realism.stats import STATS_VERSION, cached, text_stats
from realize.scorers.realism.text_features import (
    REPETITION_FEATURES,
    SHAPE_FEATURES,
    TEXT_BLOCK,
    WORD_FEATURES,
    text_block,
)
from realize.scorers.realism.turns import (
    AGREE_FEATURES,
    JUDGE_TURN_BLOCK,
    TAIL_FEATURES,
    TURN_BLOCK,
    agree_row,
    tail_rows,
    turn_row,
)

FEATURE_VERSION = "3"  # bump when a feature's definition changes (invalidates shipped weights)
COMPATIBLE_VERSIONS = ("2", "3")  # weight files whose features keep their definitions in this version

JUDGE_BLOCK: tuple[str, ...] = tuple(n for n in LM_BLOCK if n not in ENTROPY_FEATURES)
JUDGE_FEATURES: tuple[str, ...] = tuple(f"judge_{n}" for n in JUDGE_BLOCK)
JUDGE_TURN_FEATURES: tuple[str, ...] = tuple(f"judge_{n}" for n in JUDGE_TURN_BLOCK)
V1_FEATURE_NAMES: tuple[str, ...] = LM_BLOCK[:13] + SHAPE_FEATURES + REPETITION_FEATURES
V2_FEATURE_NAMES: tuple[str, ...] = LM_BLOCK + TEXT_BLOCK  # no judge
V2_ALL_FEATURE_NAMES: tuple[str, ...] = V2_FEATURE_NAMES + JUDGE_FEATURES
NEW_FEATURES: tuple[str, ...] = TURN_BLOCK + TAIL_FEATURES + JUDGE_TURN_FEATURES + AGREE_FEATURES  # version 3
# FEATURE_NAMES: the columns `extract_features` returns without a judge; ALL_FEATURE_NAMES: with one.
FEATURE_NAMES: tuple[str, ...] = V2_FEATURE_NAMES + TURN_BLOCK + TAIL_FEATURES
ALL_FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES + JUDGE_FEATURES + JUDGE_TURN_FEATURES + AGREE_FEATURES
__all__ = [
    "ALL_FEATURE_NAMES", "AGREE_FEATURES", "COMPATIBLE_VERSIONS", "FEATURE_NAMES", "FEATURE_VERSION",
    "JUDGE_FEATURES", "JUDGE_TURN_FEATURES", "NEW_FEATURES", "TAIL_FEATURES", "TURN_BLOCK", "V1_FEATURE_NAMES",
    "V2_ALL_FEATURE_NAMES", "V2_FEATURE_NAMES", "WORD_FEATURES", "extract_features", "select_columns",
]


def extract_features(
    lm: LoadedModel,
    texts: Sequence[str],
    *,
    judge: LoadedModel | None = None,
    batch_size: int = 32,
    use_cache: bool = False,
    show_progress: bool = False,
    with_tail: bool = True,
) -> torch.Tensor:
    """Feature matrix for `texts` (non-empty strings): columns `FEATURE_NAMES` (no judge), or `ALL_FEATURE_NAMES`
    when a `judge` model is given. `with_tail=False` skips the tail forward (its columns are then 0): for a
    classifier that does not use them. `use_cache` keeps the token statistics on disk (`realism.stats`)."""
    if any(not t.strip() for t in texts):
        raise ValueError("texts: expected non-empty strings")
    tok = lm.tokenizer
    stats = text_stats(lm, texts, batch_size=batch_size, use_cache=use_cache, show_progress=show_progress)
    if not with_tail:
        tails = [[0.0] * len(TAIL_FEATURES)] * len(texts)
    elif use_cache:  # the tail depends only on the text (and the model): cached like the statistics
        by_text = dict(zip(texts, stats, strict=True))
        tails = cached(f"{lm.name}-tail-s{STATS_VERSION}", texts,
                       lambda missing: tail_rows(lm, [by_text[t] for t in missing], batch_size=batch_size))
    else:
        tails = tail_rows(lm, stats, batch_size=batch_size)
    lm_rows = [lm_block_row(tok, t, st) for t, st in zip(texts, stats, strict=True)]
    turn_rows = [turn_row(st, with_entropy=True) for st in stats]
    n = len(texts)
    primary = torch.cat([torch.tensor(lm_rows, dtype=torch.float32).reshape(n, len(LM_BLOCK)), text_block(lm, texts),
                         torch.tensor(turn_rows, dtype=torch.float32).reshape(n, len(TURN_BLOCK)),
                         torch.tensor(tails, dtype=torch.float32).reshape(n, len(TAIL_FEATURES))], dim=1)
    if judge is None:
        return primary
    j_stats = text_stats(judge, texts, with_entropy=False, batch_size=batch_size, use_cache=use_cache,
                         show_progress=show_progress)
    j_rows = []
    for text, st, jst in zip(texts, stats, j_stats, strict=True):
        lm_row = dict(zip(LM_BLOCK, lm_block_row(judge.tokenizer, text, jst), strict=True))
        j_rows.append([lm_row[n] for n in JUDGE_BLOCK] + turn_row(jst, with_entropy=False)
                      + agree_row(text, (tok, st), (judge.tokenizer, jst)))
    width = len(JUDGE_FEATURES) + len(JUDGE_TURN_FEATURES) + len(AGREE_FEATURES)
    return torch.cat([primary, torch.tensor(j_rows, dtype=torch.float32).reshape(len(texts), width)], dim=1)


def select_columns(features: torch.Tensor, names: Sequence[str], wanted: Sequence[str]) -> torch.Tensor:
    """The columns `wanted` of a feature matrix whose columns are `names` (raises ValueError for a missing one)."""
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ValueError(f"features: columns {missing} not computed")
    index = {n: i for i, n in enumerate(names)}
    return features[:, [index[n] for n in wanted]]
