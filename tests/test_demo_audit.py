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
    positives = [r for n, r in best.items() if n.startswith("positive")]
    nulls = [r for n, r in best.items() if n.startswith("null")]
    assert positives and nulls and {r["kind"] for r in rows} == {"vector", "null", "positive"}
    assert min(r["specific_cos_heldout"] for r in positives) > max(r["specific_cos_heldout"] for r in nulls)
    assert all(r["verdict"] != "realizable" for r in nulls)
    loaded = datasets.load_dataset(str(out / "dataset"), split="train")  # realizable positives at least
    assert loaded.num_rows >= 1 and set(loaded["verdict"]) <= {"realizable", "partially realizable"}
    # rerunning the same command resumes: nothing is recomputed, the same verdicts come out
    assert main(["audit", "--demo", "--budget", "quick", "--quiet", "--out", str(out)]) == 0
    again = {r["vector_name"]: r["verdict"] for r in read_rows(out / "results.parquet") if r["is_best"]}
    assert again == {n: r["verdict"] for n, r in best.items()}
