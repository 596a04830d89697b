"""The README's demo on the embedded model: `realize audit --demo --budget quick` (slow, ~4 min on 2 cores)."""

from __future__ import annotations

import datasets
import pytest

from realize.data.results_dataset import read_rows
from realize.cli import main

pytestmark = pytest.mark.slow


def test_demo_audit_calibrates_controls(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["audit", "--demo", "--budget", "quick", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and (out / "report.html").stat().st_size > 10_000
    rows = read_rows(out / "results.parquet")
    best = {r["vector_name"]: r for r in rows if r["is_best"]}
    positives = [r for r in best.values() if r["kind"] == "positive"]
    nulls = [r for r in best.values() if r["kind"] == "null"]
    assert len(positives) >= 3 and len(nulls) >= 3
    assert {r["kind"] for r in rows} == {"vector", "null", "null-isotropic", "positive"}
    # positives are held-out prompts: every number is a test-context number of a prompt chosen on selection contexts
    mean = lambda rs: sum(r["specific_cos_test"] for r in rs) / len(rs)  # noqa: E731
    assert mean(positives) > mean(nulls) + 0.2
    assert all(r["verdict"] not in ("realizable", "partially realizable") for r in nulls)
    vectors = [r for r in best.values() if r["kind"] == "vector"]
    assert all(r["magnitude_factor"] > 3 for r in vectors)  # MELBO at R = 48: far beyond natural shift norms
    assert all(r["verdict"] != "realizable" for r in vectors)
    assert all(0.0 <= r["verdict_stability"] <= 1.0 for r in best.values())
    if (out / "dataset" / "data").exists():  # only prompts that pass on their own numbers
        loaded = datasets.load_dataset(str(out / "dataset"), split="train")
        assert set(loaded["prompt_verdict"]) <= {"realizable", "partially realizable"}
    # rerunning the same command resumes: nothing is recomputed, the same verdicts come out
    assert main(["audit", "--demo", "--budget", "quick", "--quiet", "--out", str(out)]) == 0
    again = {r["vector_name"]: r["verdict"] for r in read_rows(out / "results.parquet") if r["is_best"]}
    assert again == {n: r["verdict"] for n, r in best.items()}
