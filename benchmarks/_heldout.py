"""Held-out-target set-up shared by the search benchmarks (imported as a sibling module; run from the repo root).

A problem is what the audit sees for one target at one layer: the audit's own three context sets (optimization /
selection / test, `ContextSplit.of` with the preset's sizes and seed), g on each, the cached corpus shifts (the
retrieval pool) and the shipped realism classifier. Targets are the mean shifts of the natural prompts in
`benchmarks/heldout_targets.tsv` (themes absent from every shipped corpus; their clusters are not in the retrieval
pool), measured on base contexts that none of the three sets uses, so even the target's own prompt does not
score 1.0 on the test contexts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from realize.identity import model_digest
from realize.setting import AuditSetting, ContextSplit, make_setting
from realize.config import PRESETS
from realize.corpus_shifts import mean_shifts
from realize.data.corpora import load_corpus, read_clustered_file
from realize.data.models import LoadedModel, cache_root
from realize.scorers.realism import load_classifier

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class HeldoutTarget:
    cluster: str
    prompt: str  # the natural prompt whose shift is the target (never in the retrieval pool)
    target: torch.Tensor  # (d,) its mean shift on contexts outside the three sets


def split_for(preset: str, seed: int = 0) -> ContextSplit:
    p = PRESETS[preset]
    return ContextSplit.of(load_corpus("contexts"), p["n_opt_contexts"], p["n_selection"], p["n_test"], seed)


def setting_for(lm: LoadedModel, layer: int, preset: str = "default", seed: int = 0) -> AuditSetting:
    return make_setting(lm, layer, "prefix", split_for(preset, seed), load_classifier(), None,
                        fingerprint=model_digest(lm), cache_dir=cache_root() / "corpus_shifts",
                        show_progress=True)


def heldout_targets(setting: AuditSetting, n: int | None = None, n_contexts: int = 8) -> list[HeldoutTarget]:
    """The first `n` benchmark targets, measured on `n_contexts` base contexts the setting's sets never use."""
    rows = read_clustered_file(HERE / "heldout_targets.tsv")[:n]
    split = setting.contexts
    used = {*split.optimization, *split.selection, *split.test, *split.magnitude}
    unused = [c for c in load_corpus("contexts") if c not in used][:n_contexts]
    shifts = mean_shifts(setting.lm, setting.layout, setting.layer, [r.prompt for r in rows], unused)
    return [HeldoutTarget(r.cluster, r.prompt, s) for r, s in zip(rows, shifts, strict=True)]
