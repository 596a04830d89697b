"""Shared by the content explorations (`bench_kind_siblings.py`, `bench_margin_null.py`, `bench_content_cosine.py`):
their set-up on the quick preset's contexts, the stored sibling-bench rows they judge, the sibling bar with a test
added, the content cosine, and `--rejudge`. Imported as a sibling module; run the scripts from `benchmarks/`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass

import torch
from _setup import write_json
from bench_siblings import VERBATIM, unused

from realize.attacks.objectives import estimate_generics
from realize.config import AuditConfig
from realize.corpus_shifts import CorpusShifts, corpus_shifts_at
from realize.data.chat import ChatLayout, chat_layout
from realize.data.corpora import load_clustered, load_corpus
from realize.data.models import LoadedModel, cache_root, load_model
from realize.identity import model_digest
from realize.resampling import FormEvidence
from realize.scorers.realism.evaluate import auc
from realize.setting import ContextSplit, whitening

N_SIBLINGS = 6  # form siblings per prompt, as the audit's default


@dataclass(frozen=True)
class ContentBench:
    """What the content explorations measure with (`content_bench`): the quick preset's context split, the sibling
    bench's 8 target contexts, the model, the cached corpus shifts (optimization contexts), g per layer on the
    optimization and test contexts, the content metric's whitening per layer, and the first `n_positives` corpus
    positive prompts."""
    split: ContextSplit
    target_contexts: list[str]
    lm: LoadedModel
    layout: ChatLayout
    corpora: dict[int, CorpusShifts]
    generic_opt: dict[int, torch.Tensor]
    generic_test: dict[int, torch.Tensor]
    whitening: dict[int, torch.Tensor]
    positives: list[str]


def content_bench(layers: list[int], n_positives: int) -> ContentBench:
    """The set-up every content exploration shares (loads the model; corpus shifts from the cache where present)."""
    config = AuditConfig(budget="quick")
    split = ContextSplit.of(load_corpus("contexts"), config.n_opt_contexts, config.n_selection, config.n_test,
                            config.seed)
    lm = load_model()
    layout = chat_layout(lm.tokenizer, "prefix")
    corpora = corpus_shifts_at(lm, layout, layers, split.optimization, fingerprint=model_digest(lm),
                               cache_dir=cache_root() / "corpus_shifts")
    generic_opt = estimate_generics(lm, layout, layers, split.optimization)
    natural_rows = corpora[layers[0]].select("natural_prompts")[0]
    return ContentBench(split, unused(config)[:8], lm, layout, corpora, generic_opt,
                        estimate_generics(lm, layout, layers, split.test),
                        {layer: whitening(corpora[layer].shifts[natural_rows], generic_opt[layer]) for layer in layers},
                        list(corpora[layers[0]].select("positive_prompts")[1][:n_positives]))


def verbatim_controls() -> list[str]:
    """The sibling bench's verbatim corpus controls (`bench_siblings.VERBATIM` natural prompts)."""
    return [c.prompt for c in load_clustered("natural_prompts")[::97][:VERBATIM]]


def stored_rows(entries: list[dict], texts: list[str], n_pairs: int, best: list[dict | None],
                true: list[dict]) -> list[dict]:
    """One row per stored sibling-bench entry (`entries`: the pairs' 2 * `n_pairs` targets, then the verbatim
    controls; `texts` their prompts): target, best prompt, stored verdicts, this exploration's measurements of the
    best prompt (`best[i]`, None without one) and of the true prompt (`true[i]`), and for pairs the stored separation
    and true margin."""
    rows = []
    for i, e in enumerate(entries):
        row = {"target": texts[i], "best_prompt": e["best_prompt"], "verdicts": e["verdicts"], "best": best[i],
               "true": true[i], "pair": i < 2 * n_pairs}
        if row["pair"]:
            row.update(separation=e["separation"], true_margin=e["true_margin"])
        rows.append(row)
    return rows


def separates(row: dict) -> bool:
    """Whether a pair row's best prompt separates own from sibling by at least half the true margin (the bar)."""
    return row["separation"] is not None and row["separation"] >= row["true_margin"] / 2


def added_test_counts(rows: list[dict], baseline: str, passes: Callable[[dict | None], bool],
                      added_key: str) -> dict[str, int]:
    """The sibling bar for the stored `baseline` verdicts of `rows` (`stored_rows`), without and with a test added (a
    "realizable" stays so only where `passes(row["best"])`, counted under `added_key`); verbatim controls kept; the
    "realizable" verdicts whose prompt separates, and how many the added test keeps."""
    counts = {"bar_met": 0, added_key: 0, "verbatim_kept": 0, "verbatim": 0, "separating_realizable": 0,
              "separating_kept": 0}
    for r in rows:
        verdict = r["verdicts"][baseline]
        kept = verdict == "realizable" and passes(r["best"])
        if r["pair"]:
            counts["bar_met"] += verdict != "realizable" or separates(r)
            counts[added_key] += not kept or separates(r)
            if verdict == "realizable" and separates(r):
                counts["separating_realizable"] += 1
                counts["separating_kept"] += kept
        else:
            counts["verbatim"] += 1
            counts["verbatim_kept"] += kept
    return counts


def rejudged(args: argparse.Namespace, judge: Callable[[dict], object]) -> bool:
    """With `--rejudge FILE`: judges that stored report again with `judge` (no model), writes it to `--json` (or back
    to FILE) and returns True; else False."""
    if args.rejudge is None:
        return False
    report = json.loads(args.rejudge.read_text(encoding="utf-8"))
    judge(report)
    write_json(args.json or args.rejudge, report)
    return True


def auc_of(higher: list[float], lower: list[float]) -> float:
    """P(a value of `higher` > one of `lower`), ties half (`scorers.realism.evaluate.auc`)."""
    return auc(torch.tensor(higher + lower), torch.tensor([1.0] * len(higher) + [0.0] * len(lower)))


def content_cosine(prompt: torch.Tensor, siblings: torch.Tensor, target: torch.Tensor) -> float | None:
    """cos(prompt - mean(siblings), target - mean(siblings)) of unit vectors in the content metric: (d,), (k, d), (d,)
    (`bench_content_cosine.py`), as the audit's `FormEvidence` computes it; None without siblings."""
    if siblings.shape[0] == 0:
        return None
    shifts = torch.cat([prompt.unsqueeze(0), siblings]).unsqueeze(1)  # (1 + k, one "context", d)
    return FormEvidence.from_shifts([(shifts, target)]).value()  # the audit's own computation (--content-cosine)
