"""Batch audits: plan the work items, audit any shard of them, judge them all together.

A work item is one `Target` (a vector's layer, or a calibration control) under one `AuditConfig`; its id hashes the
direction bytes, layer, scale and everything its result depends on (model fingerprint, the corpora, the realism
weights, `CALIBRATION_VERSION`, the item-relevant configuration), so every process derives the same plan and ids
without talking to the others. Items are independent; only the verdicts need them all (`realize.judging`).

    plan_audit(lm, vectors, config, classifier) -> AuditPlan       # settings per layer + targets, controls first
    audit_shard(plan, targets, config, store, *, control_cache, on_item) -> list[VectorAudit]   # one shard
    run_audit(lm, vectors, config, store, ...) -> list[JudgedAudit]  # all of it in one process
    balanced(targets, n) -> list[Target]                           # order so contiguous n-way splits balance

Calibration controls are cached on disk across runs (`control_cache`, keyed by the item id); a run finds them there
before computing them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from realize.audit_item import audit_target
from realize.audit_search import AuditSetting, ContextSplit, make_setting
from realize.audit_store import ItemStore
from realize.audit_types import JudgedAudit, VectorAudit
from realize.config import AuditConfig
from realize.corpus_shifts import corpora_digest
from realize.data.corpora import load_corpus
from realize.data.models import LoadedModel, cache_root
from realize.data.vectors import SteeringVector
from realize.judging import judge_all
from realize.scorers.realism import RealismClassifier, load_classifier
from realize.targets import Target, norm_bins, null_targets, positive_targets, vector_targets

logger = logging.getLogger(__name__)
CALIBRATION_VERSION = "4"  # bump when the search, the controls or what an item stores changes


def model_fingerprint(lm: LoadedModel) -> str:
    """A cheap content hash of the model (names, shapes and the first 256 values of every parameter)."""
    digest = hashlib.sha256(lm.name.encode())
    for name, param in lm.model.named_parameters():
        digest.update(f"{name}:{tuple(param.shape)}".encode())
        digest.update(param.detach().reshape(-1)[:256].to(torch.float32).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def classifier_digest(classifier: RealismClassifier) -> str:
    """Hash of the realism classifier's parameters (the shipped weights or a user's)."""
    digest = hashlib.sha256(repr((classifier.feature_names, classifier.threshold)).encode())
    for tensor in (classifier.mean, classifier.std, *[t for layer in classifier.layers for t in layer]):
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class AuditPlan:
    settings: Mapping[tuple[int, ...], AuditSetting]  # layers -> shared contexts, generic directions, corpus shifts
    targets: tuple[Target, ...]  # per set of layers: controls first, then its vectors

    def setting(self, target: Target) -> AuditSetting:
        return self.settings[target.layers]


def plan_audit(lm: LoadedModel, vectors: Sequence[SteeringVector], config: AuditConfig,
               classifier: RealismClassifier | None = None, *, cache_dir: Path | None = None) -> AuditPlan:
    """Every work item of an audit of `vectors` (deterministic: every process gets the same plan). `classifier`
    defaults to the shipped realism classifier; `cache_dir` holds the corpus-shift cache (default
    `$REALIZE_CACHE/corpus_shifts`)."""
    classifier = classifier or load_classifier()
    contexts = ContextSplit.of(load_corpus("contexts"), config.n_opt_contexts, config.n_selection, config.n_test,
                               config.seed)
    fingerprint = model_fingerprint(lm)
    key = {"model": lm.name, "fingerprint": fingerprint, "corpora": corpora_digest(),
           "realism": classifier_digest(classifier), "calibration_version": CALIBRATION_VERSION,
           **config.item_key()}
    vector_items = vector_targets(vectors, key, config)
    behavior = None
    if "behavior" in config.axes:
        behavior = contexts.subset(config.behavior_contexts, config.behavior_contexts, config.behavior_test_contexts)
    settings: dict[tuple[int, ...], AuditSetting] = {}
    targets: list[Target] = []
    shifts_dir = cache_dir if cache_dir is not None else cache_root() / "corpus_shifts"
    for layers in sorted({t.layers for t in vector_items}):
        setting = make_setting(lm, layers, config.placement, contexts, classifier, config.thresholds.min_realism,
                               fingerprint=fingerprint, cache_dir=shifts_dir, behavior_contexts=behavior,
                               show_progress=config.show_progress)
        settings[layers] = setting
        items = [t for t in vector_items if t.layers == layers]
        controls = positive_targets(setting.corpora, config, key)
        for bins in sorted({norm_bins(t.goal) for t in items}):
            controls += null_targets(setting.corpora, bins, config, key)
        targets += controls + items
    plan = AuditPlan(settings, tuple(targets))
    for target in plan.targets:  # no target may be planned that the plan cannot serve
        if target.layers not in plan.settings:
            raise AssertionError(f"plan: {target.kind} {target.name} acts at layers {list(target.layers)}, for which "
                                 f"the plan holds no setting (it holds {[list(k) for k in plan.settings]})")
    return plan


def balanced(targets: Sequence[Target], n: int) -> list[Target]:
    """Reorder so that cutting the list into `n` contiguous chunks (as `split_between_processes` does) deals
    the items round-robin: every process gets a mix of controls and vectors."""
    return [t for r in range(n) for t in targets[r::n]]


def lookup(target: Target, store: ItemStore, control_cache: ItemStore | None) -> VectorAudit | None:
    """The finished item from the run's store, else (controls) from the shared cache, copied into the store."""
    found = store.load(target.vector_id)
    if found is None and control_cache is not None and target.kind != "vector":
        found = control_cache.load(target.vector_id)
        if found is not None:
            logger.info("%s: control taken from the cache %s", target.name, control_cache.directory)
            store.save(found)
    return found


def audit_shard(
    plan: AuditPlan,
    targets: Sequence[Target],
    config: AuditConfig,
    store: ItemStore,
    *,
    control_cache: ItemStore | None = None,
    on_item: Callable[[VectorAudit], None] | None = None,
) -> list[VectorAudit]:
    """Audit `targets` (a shard of `plan.targets`), skipping finished ones; each item is stored (atomically) as
    soon as it is done. Returns the shard's evidence, in order."""
    out = []
    for target in tqdm(targets, desc="items", disable=not config.show_progress):
        audit = lookup(target, store, control_cache)
        if audit is not None:
            logger.info("%s: already audited (%s), skipped", target.name, store.path(target.vector_id))
        else:
            audit = audit_target(plan.setting(target), target, config)
            store.save(audit)
            if control_cache is not None and target.kind != "vector":
                control_cache.save(audit)
            if on_item is not None:
                on_item(audit)
        out.append(audit)
    return out


def run_audit(
    lm: LoadedModel,
    vectors: Sequence[SteeringVector],
    config: AuditConfig,
    store: ItemStore,
    *,
    classifier: RealismClassifier | None = None,
    control_cache: ItemStore | None = None,
    cache_dir: Path | None = None,
    on_item: Callable[[VectorAudit], None] | None = None,
) -> list[JudgedAudit]:
    """The whole audit in this process: every item (controls first, per layer), then every verdict."""
    plan = plan_audit(lm, vectors, config, classifier, cache_dir=cache_dir)
    audits = audit_shard(plan, plan.targets, config, store, control_cache=control_cache, on_item=on_item)
    return judge_all(audits, config.thresholds, seed=config.seed)

