"""The audit end to end on the tiny model: three context sets, controls, verdicts, resume from stored items."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import realize.pipeline as pipeline_module
from realize.config import AuditConfig
from realize.data.corpora import load_clustered, load_corpus
from realize.data.errors import UserInputError
from realize.data.results_dataset import read_rows
from realize.data.vectors import SteeringVector
from realize.judging import judge_all
from realize.pipeline import plan_audit, run_audit
from realize.scorers.realism import RealismClassifier
from realize.scorers.realism import FEATURE_NAMES
from realize.setting import MAGNITUDE_CONTEXTS, ContextSplit
from realize.store import ItemStore
from realize.targets import bin_norm, norm_bin
from realize.verdict import VERDICTS, VerdictThresholds


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


def test_context_split_is_three_disjoint_sets_and_a_fixed_magnitude_set():
    split = ContextSplit.of(load_corpus("contexts"), 8, 8, 16, seed=3)
    sets = [set(split.optimization), set(split.selection), set(split.test), set(split.magnitude)]
    assert [len(s) for s in sets] == [8, 8, 16, MAGNITUDE_CONTEXTS]
    assert all(not (a & b) for i, a in enumerate(sets) for b in sets[i + 1:])
    assert split == ContextSplit.of(load_corpus("contexts"), 8, 8, 16, seed=3)
    other = ContextSplit.of(load_corpus("contexts"), 4, 4, 10, seed=7)  # another budget and seed
    assert other.magnitude == split.magnitude and other.test != split.test
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
    assert kinds.count("positive") == 3 and kinds.count("vector") == 3
    # two norm bins (1.0 and 1.02 share one): each has its own activation nulls, and no two nulls share a direction
    activation_nulls = [t for t in plan.targets if t.kind.startswith("null") and t.axes == ("activation",)]
    assert len(activation_nulls) == 8 and sum(t.kind == "null-isotropic" for t in activation_nulls) == 2
    directions = torch.stack([t.directions[2] / t.directions[2].norm() for t in activation_nulls])
    off_diagonal = (directions @ directions.T - torch.eye(len(activation_nulls))).abs()
    assert off_diagonal.max() < 0.99
    for t in activation_nulls:
        norm = t.directions[2].norm().item()
        assert norm == pytest.approx(bin_norm(norm_bin(norm)), rel=1e-4)
    # behavior controls are matched to each vector's first-answer effect bin: nulls per (norm bins, effect bin),
    # positives (prompts whose own effect is nearest the bin) per effect bin
    vector_bins = {(norm_bin(float(t.goal[2].norm())), t.effect_bin) for t in plan.targets if t.kind == "vector"}
    assert all(t.effect is not None and t.effect_bin is not None for t in plan.targets if t.kind == "vector")
    behavior_nulls = [t for t in plan.targets if t.kind == "null" and t.axes == ("behavior",)]
    assert len(behavior_nulls) == CONFIG.n_null * len(vector_bins)
    assert {(norm_bin(float(t.directions[2].norm())), t.effect_bin) for t in behavior_nulls} == vector_bins
    behavior_positives = [t for t in plan.targets if t.kind == "behavior-positive"]
    assert len(behavior_positives) == CONFIG.n_positive * len({b for _, b in vector_bins})
    assert all(t.effect is not None for t in behavior_positives)
    # positives come from the held-out corpus; retrieval excludes their clusters
    positive_clusters = {c.cluster for c in load_clustered("positive_prompts")}
    setting = plan.settings[(2,)]
    retrieval_clusters = {k for c, k in zip(setting.corpus.corpora, setting.corpus.clusters, strict=True)
                          if c == "natural_prompts"}
    for t in plan.targets:
        if t.kind == "positive":  # its own cluster, then the retrieval clusters whose shifts lie near its shift
            assert t.exclude_clusters[0] in positive_clusters and set(t.exclude_clusters[1:]) <= retrieval_clusters
            assert t.nearest_corpus is not None and t.nearest_corpus[1] < 0.8
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
    by_name = {t.name: t for t in plan.targets}
    for name, vector_id in both.items():
        activation_only = by_name[name].axes == ("activation",)
        assert (alone.get(name) == vector_id) == activation_only, name  # activation controls are shared
        assert (longer[name] == vector_id) == activation_only, name


def test_audit_end_to_end_and_resume(tiny, always_natural, tmp_path, monkeypatch):
    torch.manual_seed(0)
    vector = SteeringVector(directions={2: torch.randn(32)}, scale=2.0, method="test", name="v0")
    out = tmp_path / "out"
    finished, to_go = [], []

    def item_done(audit, kinds):
        finished.append(audit)
        to_go.append(kinds)

    report = run_audit(tiny, [vector], CONFIG, out, on_item=item_done, classifier=always_natural,
                       cache_dir=tmp_path / "shifts")
    judged = report.items
    kinds = sorted(j.audit.kind for j in judged)
    assert kinds == ["behavior-positive"] * 3 + ["null"] * 6 + ["null-isotropic"] + ["positive"] * 3 + ["vector"]
    for j in judged:
        for axis in j.audit.axes:
            judgement = j.judgement(axis)
            assert judgement.verdict in VERDICTS and 0.0 <= judgement.stability <= 1.0
            assert len(judgement.prompt_verdicts) == len(j.audit.axes[axis].frontier)
    positives = [j.audit for j in judged if j.audit.kind == "behavior-positive"]
    assert all(p.axes["behavior"].behavior.distill_losses is not None for p in positives)
    assert all(p.axes["behavior"].true_prompt is not None for p in positives)  # the content test's calibration
    vec = next(j for j in judged if j.audit.kind == "vector")
    assert [a.vector_id for a in finished] == [j.audit.vector_id for j in judged]  # reported as each finished
    # each report carries the kinds still to go in this (single) shard, for the pace estimate
    assert to_go == [tuple(a.kind for a in finished[i + 1:]) for i in range(len(finished))]
    activation = vec.audit.axes["activation"]
    assert activation.frontier and activation.best is not None
    assert activation.best.evidence.size == CONFIG.n_test
    best = activation.best.score
    assert best.selection == max(s.selection for s in activation.frontier)
    assert activation.unrelated is not None and activation.unrelated.score.attack == "unrelated panel"
    assert all(s.score.attack == "sibling" and s.score.ids != best.ids for s in activation.siblings)
    # the content cosine's evidence: the best prompt against its siblings, on the test contexts (activation only)
    assert (activation.form is not None) == bool(activation.siblings)
    assert activation.form is None or (activation.form.size == CONFIG.n_test
                                       and len(activation.form.dots[0]) == 1 + len(activation.siblings))
    assert vec.audit.axes["behavior"].form is None
    assert all((p.axes["activation"].true_form is not None) == bool(p.axes["activation"].true_siblings)
               for p in (j.audit for j in judged if j.audit.kind == "positive"))
    assert vec.audit.target_norm == pytest.approx(2.0 * vector.vector.norm().item(), rel=1e-5)
    behavior = vec.audit.axes["behavior"]
    assert behavior.behavior is not None and behavior.behavior.effect > 0 and behavior.frontier
    assert behavior.best is None or len(behavior.behavior.generations) == CONFIG.behavior_test_contexts
    assert vec.audit.magnitude.factor > 0 and all(j.reason for j in vec.judgements.values())
    assert len(list((out / "items").glob("*.json"))) == len(judged)
    assert {p.name for p in out.iterdir()} >= {"audit.json", "plan.json", "results.parquet", "report.html"}

    # --content-cosine judges the same evidence again: it can only turn a "specific" content outcome into "form"
    strict = judge_all([j.audit for j in judged], VerdictThresholds(content_cosine=True))
    for default, cosine in zip(judged, strict, strict=True):
        for axis, judgement in cosine.judgements.items():
            before = default.judgement(axis)
            if axis == "behavior" or before.content is None or before.content.outcome != "specific":
                assert judgement.verdict == before.verdict
            elif judgement.content.outcome == "specific":
                assert judgement.content.cosine >= 0.5 * judgement.content.true_cosine > 0
            else:
                assert judgement.verdict == "form realizable"

    def fail(*_args, **_kwargs):
        raise AssertionError("a stored item was recomputed")

    monkeypatch.setattr(pipeline_module, "audit_target", fail)
    again = run_audit(tiny, [vector], CONFIG, out, classifier=always_natural, cache_dir=tmp_path / "shifts")
    assert [(j.audit.vector_id, j.verdict) for j in again.items] == [(j.audit.vector_id, j.verdict) for j in judged]
    assert [j.audit.axes["activation"].form for j in again.items if "activation" in j.audit.axes] == \
        [j.audit.axes["activation"].form for j in judged if "activation" in j.audit.axes]  # stored and read back
    # more nulls reuse the finished ones: only the new null is computed (another configuration: another directory)
    computed = []
    monkeypatch.setattr(pipeline_module, "audit_target", lambda s, t, c: computed.append(t.name) or fail())
    with pytest.raises(UserInputError, match="different audit"):
        run_audit(tiny, [vector], dataclasses.replace(CONFIG, n_null=4), out, classifier=always_natural,
                  cache_dir=tmp_path / "shifts", overwrite=False, control_cache=ItemStore(out / "items"))
    assert not computed  # refused before anything ran: `out` holds another configuration
    with pytest.raises(AssertionError):
        run_audit(tiny, [vector], dataclasses.replace(CONFIG, n_null=4), tmp_path / "more", classifier=always_natural,
                  cache_dir=tmp_path / "shifts", control_cache=ItemStore(out / "items"))
    assert computed and computed[0].startswith("null.")

    rows = read_rows(out / "results.parquet")
    behavior_rows = sum(len(j.audit.axes["behavior"].frontier) for j in again.items if "behavior" in j.audit.axes)
    activation_rows = sum(len(j.audit.axes["activation"].frontier) for j in again.items
                          if "activation" in j.audit.axes)
    assert len(rows) == activation_rows + behavior_rows
    assert {r["axis"] for r in rows} == {"activation", "behavior"}
    for axis in ("activation", "behavior"):
        assert sum(r["is_best"] for r in rows if r["kind"] == "vector" and r["axis"] == axis) <= 1
    assert sum(r["is_best"] for r in rows if r["kind"] == "vector" and r["axis"] == "activation") == 1
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "v0" in html and "data:image/png;base64," in html and "form sibling" in html
    assert (out / "dataset" / "README.md").is_file()


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
    judged = run_audit(tiny, [vector], config, tmp_path / "out", classifier=always_natural, cache_dir=tmp_path).items
    vec = next(j for j in judged if j.audit.kind == "vector")
    assert vec.audit.layers == (1, 3) and len(vec.audit.magnitude.per_layer) == 2
    best = vec.audit.axes["activation"].best.score
    assert [i for i, *_ in best.per_layer] == [1, 3]
    per_layer = [specific for _, _, specific, _ in best.per_layer]
    assert best.value == pytest.approx(sum(per_layer) / 2, abs=1e-6)
    assert vec.judgement("activation").verdict in VERDICTS


def test_corrupt_or_stale_item_is_recomputed(tiny, always_natural, tmp_path, caplog):
    torch.manual_seed(1)
    vector = SteeringVector(directions={1: torch.randn(32)}, scale=1.0, name="v1")
    config = dataclasses.replace(CONFIG, n_null=2, n_isotropic=0, n_positive=2, axes=("activation",))
    out = tmp_path / "out"
    first = run_audit(tiny, [vector], config, out, classifier=always_natural, cache_dir=tmp_path).items
    vec = next(j for j in first if j.audit.kind == "vector")
    assert vec.verdict in ("inconclusive", "no natural candidate")  # two controls of each kind cannot decide
    store = ItemStore(out / "items")
    store.path(vec.audit.vector_id).write_text("{ truncated", encoding="utf-8")
    second = run_audit(tiny, [vector], config, out, classifier=always_natural, cache_dir=tmp_path).items
    assert next(j for j in second if j.audit.kind == "vector").audit.axes == vec.audit.axes
    # a file from before a field existed is recomputed (with a log line), never read with a default
    path = store.path(vec.audit.vector_id)
    raw = json.loads(path.read_text(encoding="utf-8"))
    del raw["axes"]["activation"]["unrelated"]
    path.write_text(json.dumps(raw), encoding="utf-8")
    assert store.load(vec.audit.vector_id) is None and "not readable by this version" in caplog.text
