"""Batch audits: plan the work items, audit any shard of them, judge them all together.

A work item is one `Target` (a vector's layer, or a calibration control) under one `AuditConfig`; its id hashes
the direction bytes, layer, scale, model fingerprint and config (`realize.audit_store.item_id`), so every process
derives the same plan and the same ids without talking to the others. Items are independent: controls and vectors
can be audited in any order, by any process; only the verdicts need them all (`judge_all`).

    plan_audit(lm, vectors, config, classifier) -> AuditPlan       # settings per layer + targets, controls first
    audit_shard(plan, targets, config, store, *, control_cache, on_item) -> list[VectorAudit]   # one shard
    judge_all(audits, thresholds) -> list[VectorAudit]             # verdicts from same-layer controls
    run_audit(lm, vectors, config, store, ...) -> list[VectorAudit]  # all of it in one process
    balanced(targets, n) -> list[Target]                           # order so contiguous n-way splits balance

Calibration controls are cached on disk across runs (`control_cache`, keyed by the item id: model fingerprint,
layer, norm, full config); a run finds them there before computing them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from realize.data.corpora import load_corpus, split_contexts
from realize.data.models import LoadedModel
from realize.data.vectors import SteeringVector
from realize.audit import (
    AuditConfig,
    Target,
    audit_target,
    control_targets,
    vector_targets,
)
from realize.audit_search import AuditSetting, make_setting
from realize.audit_store import ItemStore
from realize.audit_types import VectorAudit
from realize.verdict import VerdictThresholds, calibrate, decide
from realize.scorers.realism import RealismClassifier, load_classifier

logger = logging.getLogger(__name__)
NORM_RTOL = 1e-3  # target norms closer than this (relative) count as one norm: they share null controls


def model_fingerprint(lm: LoadedModel) -> str:
    """A cheap content hash of the model (names, shapes and the first 256 values of every parameter)."""
    digest = hashlib.sha256(lm.name.encode())
    for name, param in lm.model.named_parameters():
        digest.update(f"{name}:{tuple(param.shape)}".encode())
        digest.update(param.detach().reshape(-1)[:256].to(torch.float32).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class AuditPlan:
    settings: Mapping[int, AuditSetting]  # layer -> shared contexts, generic directions, prompt pools
    targets: tuple[Target, ...]  # per layer: controls first, then that layer's vectors


def plan_audit(lm: LoadedModel, vectors: Sequence[SteeringVector], config: AuditConfig,
               classifier: RealismClassifier | None = None) -> AuditPlan:
    """Every work item of an audit of `vectors` (deterministic: every process gets the same plan).
    `classifier` defaults to the shipped realism classifier."""
    classifier = classifier or load_classifier()
    contexts = load_corpus("contexts")
    if config.n_opt_contexts + config.n_heldout > len(contexts):
        raise ValueError(f"n_opt_contexts + n_heldout: at most {len(contexts)} contexts are shipped")
    opt, heldout = split_contexts(contexts, config.n_heldout, seed=config.seed)
    opt = opt[: config.n_opt_contexts]
    natural = load_corpus("natural_prompts")
    fingerprint = model_fingerprint(lm)
    vector_items = vector_targets(vectors, lm.name, config, fingerprint=fingerprint)
    settings: dict[int, AuditSetting] = {}
    targets = []
    for layer in sorted({t.layer for t in vector_items}):
        setting = make_setting(lm, layer, config.placement, opt, heldout, natural, classifier)
        settings[layer] = setting
        layer_items = [t for t in vector_items if t.layer == layer]
        norms = distinct_norms(float((t.scale * t.direction).norm()) for t in layer_items)
        controls = [c for c in control_targets(setting, norms[0], config, fingerprint=fingerprint)
                    if c.kind == "positive"]
        for norm in norms:
            controls += control_targets(setting, norm, config, positive=False, fingerprint=fingerprint)
        targets += controls + layer_items
    return AuditPlan(settings, tuple(targets))


def distinct_norms(norms: Iterable[float]) -> list[float]:
    """Sorted norms with near-equal ones (within NORM_RTOL, as `judge_all` matches them) merged: vectors whose
    targets differ only by float rounding share one set of null controls."""
    out: list[float] = []
    for norm in sorted(norms):
        if not out or not math.isclose(norm, out[-1], rel_tol=NORM_RTOL):
            out.append(norm)
    return out


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
    soon as it is done. Returns the shard's audits, unjudged, in order."""
    out = []
    for target in tqdm(targets, desc="items", disable=not config.show_progress):
        audit = lookup(target, store, control_cache)
        if audit is not None:
            logger.info("%s: already audited (%s), skipped", target.name, store.path(target.vector_id))
        else:
            audit = audit_target(plan.settings[target.layer], target, config)
            store.save(audit)
            if control_cache is not None and target.kind != "vector":
                control_cache.save(audit)
            if on_item is not None:
                on_item(audit)
        out.append(audit)
    return out


def best_value(audit: VectorAudit) -> float:
    """The number the verdict rests on: best held-out specific cos among natural-enough prompts (0 if none)."""
    return audit.best.specific_cos if audit.best is not None else 0.0


def with_verdict(audit: VectorAudit, null: Sequence[float], positive: Sequence[float],
                 thresholds: VerdictThresholds) -> VectorAudit:
    """Attach calibration, score interval and verdict."""
    cal = calibrate(best_value(audit), null, positive)
    interval = None
    if audit.specific_interval is not None:
        lo, hi = audit.specific_interval
        interval = (calibrate(lo, null, positive).score, calibrate(hi, null, positive).score)
    return dataclasses.replace(audit, calibration=cal, interval=interval, verdict=decide(cal, thresholds))


def _values(pool: Sequence[VectorAudit], kind: str, *, norm: float | None = None,
            exclude: str | None = None) -> list[float]:
    """Best values of `kind` controls (nulls: of the given norm when any has it), leaving out `exclude` unless it
    is the only one."""
    same = [a for a in pool if a.kind == kind]
    if norm is not None:
        same = [a for a in same if math.isclose(a.target_norm, norm, rel_tol=NORM_RTOL)] or same
    rest = [best_value(a) for a in same if a.vector_id != exclude]
    return rest or [best_value(a) for a in same]


def judge_all(audits: Sequence[VectorAudit], thresholds: VerdictThresholds) -> list[VectorAudit]:
    """Verdicts for every item, calibrated against the controls of its layer: vectors against the nulls of their
    norm and all positives; controls leave-one-out (positives against the nulls of the layer's smallest norm).
    Order is preserved."""
    by_layer: dict[int, list[VectorAudit]] = {}
    for audit in audits:
        by_layer.setdefault(audit.layer, []).append(audit)
    judged = []
    for audit in audits:
        pool = by_layer[audit.layer]
        norms = sorted(a.target_norm for a in pool if a.kind == "null")
        if not norms or not any(a.kind == "positive" for a in pool):
            raise ValueError(f"layer {audit.layer}: no null or positive controls to calibrate {audit.name!r}")
        if audit.kind == "vector":
            null, pos = _values(pool, "null", norm=audit.target_norm), _values(pool, "positive")
        else:
            norm = audit.target_norm if audit.kind == "null" else norms[0]
            null = _values(pool, "null", norm=norm, exclude=audit.vector_id)
            pos = _values(pool, "positive", exclude=audit.vector_id)
        judged.append(with_verdict(audit, null, pos, thresholds))
    return judged


def run_audit(
    lm: LoadedModel,
    vectors: Sequence[SteeringVector],
    config: AuditConfig,
    store: ItemStore,
    *,
    classifier: RealismClassifier | None = None,
    control_cache: ItemStore | None = None,
    on_item: Callable[[VectorAudit], None] | None = None,
) -> list[VectorAudit]:
    """The whole audit in this process: every item (controls first, per layer), then every verdict."""
    plan = plan_audit(lm, vectors, config, classifier)
    audits = audit_shard(plan, plan.targets, config, store, control_cache=control_cache, on_item=on_item)
    return judge_all(audits, config.thresholds)
