"""HTML report: self-contained, escaped, one section per vector."""

from __future__ import annotations

from realize.audit_types import Generation, PromptScore, VectorAudit
from realize.report import render_report, write_report
from realize.verdict import VerdictThresholds, calibrate, decide


def _score(prompt: str, cos: float) -> PromptScore:
    return PromptScore(prompt, (1, 2), "fluent", cos, cos - 0.2, cos - 0.3, 1.0, 40.0, 90.0, 0.8, (cos, cos - 0.1))


def _audit(name: str, value: float) -> VectorAudit:
    cal = calibrate(value, [0.05, 0.1, 0.0], [0.8, 0.9])
    return VectorAudit(
        vector_id=f"id-{name}", name=name, source="v.safetensors", kind="vector", layer=12, scale=2.0,
        method="melbo", target_norm=48.0, frontier=(_score("<script>alert(1)</script>", 0.7), _score("Explain simply.", 0.9)),
        best=_score("Explain simply.", 0.9), calibration=cal, interval=(0.6, 0.9), specific_interval=(0.6, 0.8),
        verdict=decide(cal, VerdictThresholds()), best_unrelated=_score("You are a pirate.", 0.5),
        behavior_recovery=0.6, behavior_interval=(0.4, 0.7),
        generations=(Generation("Hi?", "steered <b>text</b>", "prompted", "base"),),
        manifold={"share90": 0.4, "random_share90": 0.1}, seconds=12.0,
    )


def test_report_is_self_contained_and_escaped(tmp_path):
    audits = [_audit("melbo.0", 0.85), _audit("melbo.1", 0.05)]
    page = render_report(audits, null=[0.05, 0.1, 0.0], positive=[0.8, 0.9], settings="budget quick")
    assert page.count('class="vec"') == 2
    assert "realizable" in page and "not realizable" in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page and "steered &lt;b&gt;" in page
    assert page.count("data:image/png;base64,") == 4  # frontier + per-context per vector
    assert "http://" not in page and "https://" not in page  # no network fetches
    write_report(tmp_path / "report.html", page)
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == page
