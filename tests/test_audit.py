"""The audit end to end on the tiny model: three context sets, controls, verdicts, resume from stored items."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import realize.audit_batch as batch_module
from realize.audit_batch import plan_audit, run_audit
from realize.audit_output import write_outputs
from realize.audit_search import ContextSplit
from realize.audit_store import ItemStore
from realize.config import AuditConfig
from realize.data.corpora import load_clustered, load_corpus
from realize.data.results_dataset import read_rows
from realize.data.vectors import SteeringVector
from realize.scorers.realism import RealismClassifier
from realize.scorers.realism import FEATURE_NAMES
from realize.targets import bin_norm, norm_bin
from realize.verdict import VERDICTS


@pytest.fixture()
def always_natural() -> RealismClassifier:
    n = len(FEATURE_NAMES)
    return RealismClassifier(FEATURE_NAMES, torch.zeros(n), torch.ones(n), ((torch.zeros(1, n), torch.tensor([2.0])),))


CONFIG = AuditConfig(budget="quick", n_opt_contexts=3, n_selection=3, n_test=4, n_null=3, n_isotropic=1,
                     n_positive=3, behavior_tokens=4, behavior_contexts=2, behavior_test_contexts=3, distill_steps=3,
                     manifold=False, show_progress=False)


def test_presets_are_what_the_cli_runs():
    quick = AuditConfig(budget="quick")
    assert quick == AuditConfig.preset("quick") and (quick.n_null, quick.n_test) == (4, 10)
    assert AuditConfig.preset("quick", n_null=9).n_null == 9
    with pytest.raises(ValueError, match="n_test"):
        AuditConfig(n_test=0)
    assert "n_null" not in CONFIG.item_key() and "thresholds" not in CONFIG.item_key()


def test_context_split_is_three_disjoint_sets():
    split = ContextSplit.of(load_corpus("contexts"), 8, 8, 16, seed=3)
    sets = [set(split.optimization), set(split.selection), set(split.test)]
    assert [len(s) for s in sets] == [8, 8, 16]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert split == ContextSplit.of(load_corpus("contexts"), 8, 8, 16, seed=3)
    with pytest.raises(ValueError, match="at most"):
        ContextSplit.of(["a", "b"], 1, 1, 1, seed=0)


def test_plan_controls(tiny, always_natural, tmp_path):
    torch.manual_seed(0)
    unit = torch.randn(32)
    unit = unit / unit.norm() * 4.0  # a bin centre: 4.0 and 4.08 share a bin, 40 has its own
    vectors = [SteeringVector(directions={2: unit}, scale=s, name=f"v{s}") for s in (1.0, 1.02, 10.0)]
    plan = plan_audit(tiny, vectors, CONFIG, always_natural, cache_dir=tmp_path)
    assert set(plan.settings) == {(2,)}
    kinds = [t.kind for t in plan.targets]
    assert kinds.count("positive") == 3 and kinds.count("vector") == 3 and kinds.count("behavior-positive") == 3
    assert {t.prompt for t in plan.targets if t.kind == "positive"} == {
        t.prompt for t in plan.targets if t.kind == "behavior-positive"}
    # two norm bins (1.0 and 1.02 share one): each has its own nulls, and no two nulls share a direction
    assert kinds.count("null") == 6 and kinds.count("null-isotropic") == 2
    nulls = [t for t in plan.targets if t.kind.startswith("null")]
    directions = torch.stack([t.directions[2] / t.directions[2].norm() for t in nulls])
    off_diagonal = (directions @ directions.T - torch.eye(len(nulls))).abs()
    assert off_diagonal.max() < 0.99
    for t in nulls:
        norm = t.directions[2].norm().item()
        assert norm == pytest.approx(bin_norm(norm_bin(norm)), rel=1e-4)
    # positives come from the held-out corpus; retrieval excludes their clusters
    positive_clusters = {c.cluster for c in load_clustered("positive_prompts")}
    setting = plan.settings[(2,)]
    retrieval_clusters = {k for c, k in zip(setting.corpus.corpora, setting.corpus.clusters, strict=True)
                          if c == "natural_prompts"}
    for t in plan.targets:
        if t.kind == "positive":
            assert set(t.exclude_clusters) <= positive_clusters and not set(t.exclude_clusters) & retrieval_clusters
    assert list(tmp_path.glob("L2-*.safetensors")), "corpus shifts are cached"
    # an item's id depends only on what its result depends on: an activation positive (or isotropic null) is the
    # same item in an activation-only audit, a null running both axes is not, and behavior settings move only
    # the items that run the behavior axis
    def ids(config: AuditConfig) -> dict[str, str]:
        return {t.name: t.vector_id for t in plan_audit(tiny, vectors, config, always_natural,
                                                        cache_dir=tmp_path).targets}

    both = ids(CONFIG)
    alone = ids(dataclasses.replace(CONFIG, axes=("activation",)))
    longer = ids(dataclasses.replace(CONFIG, behavior_tokens=5, distill_steps=4))
    for name, vector_id in both.items():
        kind = name.rsplit(".", 2)[0] if name.startswith(("null", "positive", "behavior")) else "vector"
        same_alone = kind.startswith("positive") or kind.startswith("null-isotropic")
        assert (alone.get(name) == vector_id) == same_alone, name
        assert (longer[name] == vector_id) == (kind.startswith("positive") or kind.startswith("null-isotropic")), name


def test_audit_end_to_end_and_resume(tiny, always_natural, tmp_path, monkeypatch):
    torch.manual_seed(0)
    vector = SteeringVector(directions={2: torch.randn(32)}, scale=2.0, method="test", name="v0")
    store = ItemStore(tmp_path / "items")
    finished = []
    judged = run_audit(tiny, [vector], CONFIG, store, on_item=finished.append, classifier=always_natural,
                       cache_dir=tmp_path / "shifts")
    kinds = sorted(j.audit.kind for j in judged)
    assert kinds == ["behavior-positive"] * 3 + ["null"] * 3 + ["null-isotropic"] + ["positive"] * 3 + ["vector"]
    for j in judged:
        for axis in j.audit.axes:
            judgement = j.judgement(axis)
            assert judgement.verdict in VERDICTS and 0.0 <= judgement.stability <= 1.0
    positives = [j.audit for j in judged if j.audit.kind == "behavior-positive"]
    assert all(p.behavior is not None and p.behavior.distill_losses is not None for p in positives)
    vec = next(j for j in judged if j.audit.kind == "vector")
    assert [a.vector_id for a in finished] == [j.audit.vector_id for j in judged]  # reported as each finished
    assert vec.audit.frontier and vec.audit.best is not None and vec.audit.evidence is not None
    assert len(vec.audit.evidence.dots) == CONFIG.n_test
    best = vec.audit.best
    assert best.selection_specific_cos == max(s.selection_specific_cos for s in vec.audit.frontier)
    assert vec.audit.target_norm == pytest.approx(2.0 * vector.vector.norm().item(), rel=1e-5)
    behavior = vec.audit.behavior
    assert behavior is not None and behavior.effect > 0 and behavior.frontier
    assert behavior.best is None or len(behavior.generations) == CONFIG.behavior_test_contexts
    assert vec.audit.magnitude.factor > 0 and vec.activation.reason and vec.behavior.reason
    assert len(list((tmp_path / "items").glob("*.json"))) == len(judged)

    def fail(*_args, **_kwargs):
        raise AssertionError("a stored item was recomputed")

    monkeypatch.setattr(batch_module, "audit_target", fail)
    again = run_audit(tiny, [vector], CONFIG, store, classifier=always_natural, cache_dir=tmp_path / "shifts")
    assert [(j.audit.vector_id, j.verdict, j.audit.best.ids if j.audit.best else None) for j in again] == [
        (j.audit.vector_id, j.verdict, j.audit.best.ids if j.audit.best else None) for j in judged
    ]
    # more nulls reuse the finished ones: only the new null is computed
    computed = []
    monkeypatch.setattr(batch_module, "audit_target", lambda s, t, c: computed.append(t.name) or fail())
    with pytest.raises(AssertionError):
        run_audit(tiny, [vector], dataclasses.replace(CONFIG, n_null=4), store, classifier=always_natural,
                  cache_dir=tmp_path / "shifts")
    assert computed and computed[0].startswith("null.")

    paths = write_outputs(again, tmp_path / "out", model="tiny", seed=0, budget="quick", settings="test")
    rows = read_rows(paths["results"])
    behavior_rows = sum(len(j.audit.behavior.frontier) for j in again if j.audit.behavior is not None)
    assert len(rows) == sum(len(j.audit.frontier) for j in again) + behavior_rows
    assert {r["axis"] for r in rows} == {"activation", "behavior"}
    for axis in ("activation", "behavior"):
        assert sum(r["is_best"] for r in rows if r["kind"] == "vector" and r["axis"] == axis) <= 1
    assert sum(r["is_best"] for r in rows if r["kind"] == "vector" and r["axis"] == "activation") == 1
    html = paths["report"].read_text(encoding="utf-8")
    assert "v0" in html and "data:image/png;base64," in html
    assert (paths["dataset"] / "README.md").is_file()


def test_multi_layer_steer_is_one_target(tiny, always_natural, tmp_path):
    """A steer at layers 1 and 3 is audited whole: one target, nulls and positives at both layers, per-layer numbers."""
    torch.manual_seed(2)
    vector = SteeringVector(directions={1: torch.randn(32), 3: 2 * torch.randn(32)}, scale=1.0, name="multi")
    config = dataclasses.replace(CONFIG, n_isotropic=0, axes=("activation",))
    plan = plan_audit(tiny, [vector], config, always_natural, cache_dir=tmp_path)
    assert set(plan.settings) == {(1, 3)}
    assert all(t.layers == (1, 3) for t in plan.targets)
    nulls = [t for t in plan.targets if t.kind == "null"]
    for layer in (1, 3):  # each layer's null at that layer's norm bin
        want = bin_norm(norm_bin(float(vector.directions[layer].norm())))
        assert all(float(t.directions[layer].norm()) == pytest.approx(want, rel=1e-4) for t in nulls)
    judged = run_audit(tiny, [vector], config, ItemStore(tmp_path / "items"), classifier=always_natural,
                       cache_dir=tmp_path)
    vec = next(j for j in judged if j.audit.kind == "vector")
    assert vec.audit.layers == (1, 3) and len(vec.audit.magnitude.per_layer) == 2
    assert [i for i, *_ in vec.audit.best.per_layer] == [1, 3]
    per_layer = [specific for _, _, specific, _ in vec.audit.best.per_layer]
    assert vec.audit.best.specific_cos == pytest.approx(sum(per_layer) / 2, abs=1e-6)
    assert vec.activation.verdict in VERDICTS


def test_corrupt_item_is_recomputed(tiny, always_natural, tmp_path):
    torch.manual_seed(1)
    vector = SteeringVector(directions={1: torch.randn(32)}, scale=1.0, name="v1")
    config = dataclasses.replace(CONFIG, n_null=2, n_isotropic=0, n_positive=2, axes=("activation",))
    store = ItemStore(tmp_path / "items")
    first = run_audit(tiny, [vector], config, store, classifier=always_natural, cache_dir=tmp_path)
    vec = next(j for j in first if j.audit.kind == "vector")
    assert vec.verdict in ("inconclusive", "no natural candidate")  # two controls of each kind cannot decide
    store.path(vec.audit.vector_id).write_text("{ truncated", encoding="utf-8")
    second = run_audit(tiny, [vector], config, store, classifier=always_natural, cache_dir=tmp_path)
    assert next(j for j in second if j.audit.kind == "vector").audit.best == vec.audit.best
    assert store.load(vec.audit.vector_id) is not None
