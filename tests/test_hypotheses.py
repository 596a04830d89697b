"""Prompts the user suspects (`realize audit --prompt`, `AuditConfig.hypotheses`): measured on every vector and axis
with their own form siblings, judged by the same rules against the same controls, never changing a control."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import realize.pipeline as pipeline_module
from realize.config import AuditConfig
from realize.data.results_dataset import read_rows
from realize.data.vectors import SteeringVector
from realize.evidence import Hypothesis
from realize.judging import controls_for, judge_one
from realize.pipeline import plan_audit, run_audit
from realize.verdict import VERDICTS, VerdictThresholds

from test_audit import CONFIG, always_natural  # noqa: F401  (fixture)

SUSPECTED = ("Talk about cats.", "Answer in French.")


def test_config_validates_the_prompts():
    assert AuditConfig(hypotheses=["Be brief."]).hypotheses == ("Be brief.",)
    with pytest.raises(ValueError, match="--prompt"):
        AuditConfig(hypotheses=("  ",))
    with pytest.raises(ValueError, match="each prompt once"):
        AuditConfig(hypotheses=("Be brief.", "Be brief."))
    config = AuditConfig(budget="quick", hypotheses=SUSPECTED)
    assert AuditConfig.from_json(config.to_json()) == config


def test_suspected_prompts_change_the_vectors_items_only(tiny, always_natural, tmp_path):
    vector = SteeringVector(directions={2: torch.randn(32, generator=torch.Generator().manual_seed(0))}, scale=2.0,
                            name="v0")
    plain = plan_audit(tiny, [vector], CONFIG, always_natural, cache_dir=tmp_path)
    with_prompts = plan_audit(tiny, [vector], dataclasses.replace(CONFIG, hypotheses=SUSPECTED), always_natural,
                              cache_dir=tmp_path)
    ids = {t.kind: set() for t in plain.targets}
    for plan in (plain, with_prompts):
        for t in plan.targets:
            ids[t.kind].add(t.vector_id)
    assert len(ids.pop("vector")) == 2  # the vector is another item (it measures the prompts)
    assert all(len(v) == len({t.vector_id for t in plain.targets if t.kind == k}) for k, v in ids.items())


def test_suspected_prompts_are_judged_like_the_best(tiny, always_natural, tmp_path, monkeypatch):
    torch.manual_seed(0)
    vector = SteeringVector(directions={2: torch.randn(32)}, scale=2.0, method="test", name="v0")
    out = tmp_path / "out"
    first = run_audit(tiny, [vector], CONFIG, out, classifier=always_natural, cache_dir=tmp_path / "shifts")
    computed: list[str] = []
    original = pipeline_module.audit_target
    monkeypatch.setattr(pipeline_module, "audit_target",
                        lambda setting, target, config: computed.append(target.kind) or original(setting, target,
                                                                                                   config))
    config = dataclasses.replace(CONFIG, hypotheses=SUSPECTED)
    report = run_audit(tiny, [vector], config, out, classifier=always_natural, cache_dir=tmp_path / "shifts")
    assert computed == ["vector"]  # the same directory resumes: every control is reused
    vec = next(j for j in report.items if j.audit.kind == "vector")
    old = next(j for j in first.items if j.audit.kind == "vector")
    for axis in ("activation", "behavior"):
        evidence, judgement = vec.audit.axes[axis], vec.judgement(axis)
        assert [h.measured.score.prompt for h in evidence.hypotheses] == list(SUSPECTED)
        assert all(h.measured.score.attack == "hypothesis" for h in evidence.hypotheses)
        assert all(h.siblings and all(s.score.attack == "sibling" for s in h.siblings) for h in evidence.hypotheses)
        assert all(h.measured.evidence.size == (CONFIG.n_test if axis == "activation"
                                                else CONFIG.behavior_test_contexts) for h in evidence.hypotheses)
        assert len(judgement.hypotheses) == 2 and all(j.verdict in VERDICTS and j.reason for j in judgement.hypotheses)
        # the search and its verdict are those of the audit without the prompts (the same seed, the same controls)
        assert [s.prompt for s in evidence.frontier] == [s.prompt for s in old.audit.axes[axis].frontier]
        assert judgement.verdict == old.judgement(axis).verdict
    rows = [r for r in read_rows(out / "results.parquet") if r["attack"] == "hypothesis"]
    assert sorted((r["axis"], r["prompt"]) for r in rows) == sorted((a, p) for a in ("activation", "behavior")
                                                                    for p in SUSPECTED)
    by_prompt = {(r["axis"], r["prompt"]): r for r in rows}
    for axis in ("activation", "behavior"):
        for h, j in zip(vec.audit.axes[axis].hypotheses, vec.judgement(axis).hypotheses, strict=True):
            row = by_prompt[(axis, h.measured.score.prompt)]
            assert not row["is_best"] and row["prompt_verdict"] == row["verdict"] == j.verdict
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Your prompts" in html and "Answer in French." in html


def test_a_suspected_prompt_equal_to_the_best_gets_the_best_prompts_verdict(tiny, always_natural, tmp_path):
    """`as_best` only swaps the prompt: the best prompt given as a hypothesis is judged exactly as the item."""
    torch.manual_seed(3)
    vector = SteeringVector(directions={2: torch.randn(32)}, scale=2.0, name="v0")
    report = run_audit(tiny, [vector], CONFIG, tmp_path / "out", classifier=always_natural,
                       cache_dir=tmp_path / "shifts")
    pool = [j.audit for j in report.items]
    vec = next(a for a in pool if a.kind == "vector")
    thresholds = VerdictThresholds()
    for axis in ("activation", "behavior"):
        evidence = vec.axes[axis]
        if evidence.best is None:
            continue
        nulls, positives = controls_for(vec, pool, axis)
        own = judge_one(vec, nulls, positives, thresholds, axis=axis)
        given = dataclasses.replace(evidence.best, score=dataclasses.replace(evidence.best.score, attack="hypothesis"))
        as_hypothesis = dataclasses.replace(evidence, hypotheses=(Hypothesis(given, evidence.siblings),))
        judged = judge_one(dataclasses.replace(vec, axes={**vec.axes, axis: as_hypothesis}), nulls, positives,
                           thresholds, axis=axis)
        (hyp,) = judged.hypotheses
        assert (hyp.verdict, hyp.stability, hyp.calibration, hyp.content) == (
            own.verdict, own.stability, own.calibration, own.content)
        if evidence.behavior is not None and evidence.behavior.inert:
            continue  # nothing to reproduce: inconclusive whatever the prompt
        # a prompt the realism judge does not call natural is no candidate, and the reason says so
        strict = dataclasses.replace(vec, min_realism=2.0, unnatural_below=1.5)
        unnatural = judge_one(dataclasses.replace(strict, axes={**vec.axes, axis: as_hypothesis}), nulls, positives,
                              thresholds, axis=axis).hypotheses[0]
        assert unnatural.verdict == "no natural candidate" and "the judge calls it unnatural" in unnatural.reason
