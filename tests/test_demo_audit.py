"""The README's demo on the embedded model, exactly as `bash scripts/demo` runs it (`realize audit --demo --budget
quick`), with the calibration shipped in the package (`realize/calibration/`): every control must come from there
(else the shipped calibration is stale: `bash scripts/ship-calibration`), and one shipped control recomputed from
scratch must give the same evidence, so the demo's verdicts are what the full computation gives."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import pytest
import torch

from realize.cli import main
from realize.config import AuditConfig
from realize.data.models import load_model
from realize.data.results_dataset import read_rows
from realize.data.vectors import load_vectors
from realize.item import audit_target
from realize.pipeline import plan_audit, shipped_calibration

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "demo"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["audit", "--demo", "--budget", "quick", "--quiet", "--out", str(out),
                     "--control-cache", str(out.parent / "controls")]) == 0
    return out, printed.getvalue()


def test_demo_controls_come_from_the_shipped_calibration(demo):
    out, printed = demo
    plan = json.loads((out / "plan.json").read_text())["items"]
    controls = [i for i in plan if i["kind"] != "vector"]
    shipped = {p.stem for p in shipped_calibration().directory.glob("*.json")}
    stale = [i["name"] for i in controls if i["id"] not in shipped]
    assert not stale, f"shipped calibration is stale for {stale[:3]}: run bash scripts/ship-calibration"
    assert f"({len(controls)} already done)" in printed
    counts = {k: sum(i["kind"] == k for i in plan) for k in {i["kind"] for i in plan}}
    assert "process(es): " + ", ".join(f"{counts[k]} {k}" for k in sorted(counts, key=lambda k: (k != "vector", k))) \
        in printed


def test_demo_verdicts(demo):
    out, printed = demo
    assert "report:" in printed and (out / "report.html").stat().st_size > 10_000
    rows = read_rows(out / "results.parquet")
    best = {(r["vector_name"], r["axis"]): r for r in rows if r["is_best"]}
    vectors = [r for r in rows if r["kind"] == "vector"]
    assert {(r["vector_name"], r["axis"]) for r in vectors} == {(f"melbo.{i}", a) for i in (0, 1)
                                                                for a in ("activation", "behavior")}
    mean = lambda kind: sum(r["specific_cos_test"] for (_, a), r in best.items()  # noqa: E731
                            if a == "activation" and r["kind"] == kind) / max(1, sum(
                                a == "activation" and r["kind"] == kind for (_, a), r in best.items()))
    assert mean("positive") > mean("null") + 0.2  # held-out positives are realized, random directions are not
    for (_, axis), r in best.items():
        assert 0.0 <= r["verdict_stability"] <= 1.0
        if r["kind"] == "null":
            assert r["verdict"] not in ("realizable", "partially realizable")
    if (out / "dataset" / "data").exists():  # only prompts that pass on their own selection numbers
        loaded = datasets.load_dataset(str(out / "dataset"), split="train")
        assert set(loaded["kind"]) == {"vector"}
        assert set(loaded["prompt_verdict"]) <= {"realizable", "partially realizable"}


def test_a_shipped_control_recomputes_the_same(demo):
    """The cheapest shipped control, recomputed from scratch with one thread (as shipped), gives the same evidence."""
    out, _ = demo
    lm = load_model()
    config = AuditConfig(budget="quick", show_progress=False)
    plan = plan_audit(lm, load_vectors(out / "demo_vectors.safetensors"), config)
    target = next(t for t in plan.targets if t.kind == "null-isotropic")
    shipped = shipped_calibration().load(target.vector_id)
    assert shipped is not None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = audit_target(plan.setting(target), target, config)
    finally:
        torch.set_num_threads(threads)
    for axis, evidence in shipped.axes.items():
        other = again.axes[axis]
        assert [s.prompt for s in other.frontier] == [s.prompt for s in evidence.frontier]
        for a, b in zip(other.frontier, evidence.frontier, strict=True):
            assert math.isclose(a.value, b.value, abs_tol=1e-5) and math.isclose(a.selection, b.selection,
                                                                                 abs_tol=1e-5)
        assert other.content_margin == pytest.approx(evidence.content_margin, abs=1e-5)


def test_set_up_installs_the_library_versions_the_calibration_was_shipped_with():
    """Item ids hash the versions of the libraries that compute realism features: scripts/setup installs with
    realize/calibration/environment.txt as pip constraints, so a fresh set-up reuses the shipped calibration (a newer
    transformers on the index made a fresh demo recompute every control)."""
    from realize.pipeline import shipped_environment_mismatch

    assert shipped_environment_mismatch() == []
