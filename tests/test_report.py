"""HTML report: self-contained, escaped, one section per item, verdict reasons and controls shown."""

from __future__ import annotations

import dataclasses

from realize.audit_types import BehaviorAxis, BehaviorScore, Generation, JudgedAudit, PromptScore, VectorAudit
from realize.judging import judge_one
from realize.report import render_report, write_report
from realize.verdict import MeanEvidence, VerdictThresholds, magnitude

NATURAL_NORMS = [4.0 + 0.02 * i for i in range(50)]


def _score(prompt: str, cos: float, attack: str = "fluent") -> PromptScore:
    return PromptScore(prompt, (1, 2), attack, cos, cos, cos - 0.2, cos - 0.3, 1.0, 0.5, 40.0, 90.0, 0.8,
                       (cos, cos - 0.1))


def _bscore(prompt: str, recovery: float, attack: str = "fluent") -> BehaviorScore:
    return BehaviorScore(prompt, (1, 2), attack, recovery, recovery, (recovery, recovery - 0.1), 0.2, 0.3, 0.8,
                         1.2, 40.0, 90.0, 0.8)


def behavior_axis(recovery: float | None, effect: float = 0.5) -> BehaviorAxis:
    best = None if recovery is None else _bscore("Talk like a sailor.", recovery)
    return BehaviorAxis(effect=effect, inert=effect < 0.01,
                        frontier=(_bscore("<script>alert(1)</script>", 0.1), *(() if best is None else (best,))),
                        best=best, best_unrelated=_bscore("You are a pirate.", 0.1, "retrieval"),
                        activation_prompt=_bscore("Explain simply.", 0.2, "activation best"),
                        evidence=None if best is None else MeanEvidence(best.per_context),
                        generations=(Generation("Hi?", "steered <b>text</b>", "prompted", "base"),),
                        vector_norm=5.0)


def plain_audit(name: str, value: float | None, *, kind: str = "vector", norm: float = 5.0,
                vector_id: str | None = None, recovery: float | None = 0.6) -> VectorAudit:
    best = None if value is None else _score("Explain simply.", value)
    axes = {"vector": ("activation", "behavior"), "null": ("activation", "behavior"), "positive": ("activation",),
            "behavior-positive": ("behavior",), "null-isotropic": ("activation",)}[kind]
    return VectorAudit(
        vector_id=vector_id or f"id-{name}", name=name, source="v.safetensors", kind=kind, axes=axes, layer=12,
        layers=(12,),
        scale=1.0, method="melbo", target_norm=norm,
        frontier=(_score("<script>alert(1)</script>", 0.7), *(() if best is None else (best,)),
                  _score("You are a pirate.", 0.5, "retrieval")),
        best=best, best_unrelated=_score("You are a pirate.", 0.5, "retrieval"), best_no_retrieval=best,
        evidence=None, magnitude=magnitude(norm, 1.0, NATURAL_NORMS, None if value is None else 0.5),
        min_realism=0.6, behavior=behavior_axis(recovery) if "behavior" in axes else None,
        manifold={"share90": 0.4, "random_share90": 0.1}, seconds=12.0,
    )


def controls(norm: float = 5.0) -> list[VectorAudit]:
    nulls = [plain_audit(f"null{i}", v, kind="null", norm=norm, recovery=r)
             for i, (v, r) in enumerate(((0.05, 0.0), (0.1, 0.05), (0.0, 0.02), (0.07, 0.03)))]
    positives = [plain_audit(f"pos{i}", v, kind="positive") for i, v in enumerate((0.8, 0.9, 0.85))]
    behavior = [plain_audit(f"bpos{i}", None, kind="behavior-positive", recovery=r)
                for i, r in enumerate((0.6, 0.7, 0.65))]
    return nulls + positives + behavior


def judged(name: str, value: float | None, norm: float = 5.0, recovery: float | None = 0.6) -> JudgedAudit:
    from realize.judging import judge_all

    audit = plain_audit(name, value, norm=norm, recovery=recovery)
    return judge_all([audit, *controls(norm)], VerdictThresholds())[0]


def test_judgement_of_synthetic_items():
    assert judged("a", 0.85).verdict == "realizable"
    assert judged("b", 0.02).verdict == "not realizable"
    assert judged("c", None).verdict == "no natural candidate"
    big = judged("d", 0.85, norm=50.0)
    assert big.verdict == "direction realizable" and "beyond natural" in big.activation.reason
    verdicts = judged("a", 0.85).activation.prompt_verdicts
    assert len(verdicts) == 3 and verdicts[1] == "realizable" and verdicts[2] in ("partially realizable",
                                                                                  "not realizable")


def test_prompt_verdict_needs_realism_and_both_context_sets():
    j = judged("a", 0.85)
    low = dataclasses.replace(j.audit, frontier=(dataclasses.replace(j.audit.frontier[1], realism=0.1),
                                                 dataclasses.replace(j.audit.frontier[1],
                                                                     selection_specific_cos=0.02)))
    pool = controls()
    again = judge_one(low, [a for a in pool if a.kind == "null"], [a for a in pool if a.kind == "positive"],
                      VerdictThresholds())
    assert again.prompt_verdicts == ("not natural", "not realizable")


def test_behavior_axis_verdicts():
    assert judged("a", 0.05, recovery=0.7).behavior.verdict == "realizable"
    assert judged("a", 0.05, recovery=0.01).behavior.verdict == "not realizable"
    assert judged("a", 0.05, recovery=None).behavior.verdict == "no natural candidate"
    inert = judged("a", 0.05).audit
    inert = dataclasses.replace(inert, behavior=behavior_axis(0.9, effect=0.001))
    from realize.judging import judge_all

    verdict = judge_all([inert, *controls()], VerdictThresholds())[0].behavior
    assert verdict.verdict == "inconclusive" and "barely changes" in verdict.reason


def test_generic_behavior_is_not_called_specific():
    """A best prompt that barely beats an unrelated instruction gets "generically realizable" (item and prompt
    verdicts, and the stability resamples), one that closes most of what the instruction leaves keeps its verdict."""
    from realize.audit_types import specific_recovery
    from realize.judging import judge_all

    assert abs(specific_recovery(0.7, 0.6) - 0.25) < 1e-12
    assert abs(specific_recovery(0.7, -0.5) - 0.7) < 1e-12  # no instruction helps: the recovery itself
    base = judged("a", 0.05, recovery=0.7).audit
    for generic, expected in ((0.6, "generically realizable"), (0.1, "realizable")):
        axis = dataclasses.replace(base.behavior, generic=_bscore("Use simple words.", generic, "unrelated panel"))
        verdict = judge_all([dataclasses.replace(base, behavior=axis), *controls()], VerdictThresholds())[0].behavior
        assert verdict.verdict == expected
        assert verdict.prompt_verdicts[-1] == expected  # the best prompt's own verdict (the dataset keeps it or not)
        if expected == "generically realizable":
            assert "Use simple words." in verdict.reason and "closes only 0.25" in verdict.reason
            assert verdict.stability == 1.0  # every resample agrees: the generic check is part of the verdict
    loose = VerdictThresholds(generic_specific=0.2)  # the threshold is the user's to set
    axis = dataclasses.replace(base.behavior, generic=_bscore("Use simple words.", 0.6, "unrelated panel"))
    assert judge_all([dataclasses.replace(base, behavior=axis), *controls()], loose)[0].behavior.verdict == \
        "realizable"


def test_report_is_self_contained_and_escaped(tmp_path):
    from realize.judging import judge_all

    items = [judged("melbo.0", 0.85), judged("melbo.1", 0.05), *judge_all(controls(), VerdictThresholds())]
    page = render_report(items, settings="budget quick")
    assert page.count('class="vec"') == len(items)
    assert "realizable" in page and "not realizable" in page and "inconclusive" in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page and "steered &lt;b&gt;" in page
    assert "Why:" in page and "Controls" in page and "search alone (retrieval off)" in page
    n_plots = sum(2 * len(j.audit.axes) for j in items)  # frontier + per-context, per item and axis
    assert page.count("data:image/png;base64,") == n_plots
    assert "Behavior axis" in page and "Activation axis" in page
    assert "http://" not in page and "https://" not in page  # no network fetches
    base = judged("melbo.2", 0.05, recovery=0.7).audit
    axis = dataclasses.replace(base.behavior, generic=_bscore("Use <i>simple</i> words.", 0.6, "unrelated panel"))
    generic = judge_all([dataclasses.replace(base, behavior=axis), *controls()], VerdictThresholds())[:1]
    generic_page = render_report(generic, settings="budget quick")
    assert "generically realizable" in generic_page and "Use &lt;i&gt;simple&lt;/i&gt; words." in generic_page
    assert "specific recovery of the best prompt: 0.25" in generic_page
    write_report(tmp_path / "report.html", page)
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == page
