"""The audit end to end on the tiny model: controls, verdicts, resume from stored items, outputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import realize.audit_batch as batch_module
from realize.data.results_dataset import read_rows
from realize.data.vectors import SteeringVector
from realize.audit import AuditConfig
from realize.audit_batch import run_audit
from realize.audit_output import write_outputs
from realize.audit_store import ItemStore
from realize.verdict import VERDICTS
from realize.scorers.realism import RealismClassifier
from realize.scorers.realism_features import FEATURE_NAMES


@pytest.fixture()
def always_natural() -> RealismClassifier:
    n = len(FEATURE_NAMES)
    return RealismClassifier(FEATURE_NAMES, torch.zeros(n), torch.ones(n), ((torch.zeros(1, n), torch.tensor([2.0])),))


CONFIG = AuditConfig(budget="quick", n_opt_contexts=3, n_heldout=3, n_null=2, n_positive=2, behavior_tokens=4,
                     behavior_contexts=1, manifold=False, show_progress=False)


def test_audit_end_to_end_and_resume(tiny, always_natural, tmp_path, monkeypatch):
    torch.manual_seed(0)
    vector = SteeringVector(directions={2: torch.randn(32)}, scale=2.0, method="test", name="v0")
    store = ItemStore(tmp_path / "items")
    finished = []
    audits = run_audit(tiny, [vector], CONFIG, store, on_item=finished.append, classifier=always_natural)
    kinds = sorted(a.kind for a in audits)
    assert kinds == ["null", "null", "positive", "positive", "vector"]
    assert all(a.verdict in VERDICTS and a.calibration is not None for a in audits)
    vec = next(a for a in audits if a.kind == "vector")
    assert [a.vector_id for a in finished] == [a.vector_id for a in audits]  # reported as each item finished
    assert vec.frontier and vec.best is not None
    assert vec.target_norm == pytest.approx(2.0 * vector.vector.norm().item(), rel=1e-5)
    assert vec.behavior_recovery is not None and len(vec.generations) == 1
    assert len(list((tmp_path / "items").glob("*.json"))) == 5

    def fail(*_args, **_kwargs):
        raise AssertionError("a stored item was recomputed")

    monkeypatch.setattr(batch_module, "audit_target", fail)
    again = run_audit(tiny, [vector], CONFIG, store, classifier=always_natural)
    assert [(a.vector_id, a.verdict, a.best.ids if a.best else None) for a in again] == [
        (a.vector_id, a.verdict, a.best.ids if a.best else None) for a in audits
    ]

    paths = write_outputs(again, tmp_path / "out", model="tiny", seed=0, budget="quick", settings="test")
    rows = read_rows(paths["results"])
    assert len(rows) == sum(len(a.frontier) for a in again)
    assert sum(r["is_best"] for r in rows if r["kind"] == "vector") == 1
    html = paths["report"].read_text(encoding="utf-8")
    assert "v0" in html and "data:image/png;base64," in html
    assert (paths["dataset"] / "README.md").is_file()


def test_corrupt_item_is_recomputed(tiny, always_natural, tmp_path):
    torch.manual_seed(1)
    vector = SteeringVector(directions={1: torch.randn(32)}, scale=1.0, name="v1")
    config = dataclasses.replace(CONFIG, n_null=1, n_positive=1, behavior_tokens=0)
    store = ItemStore(tmp_path / "items")
    first = run_audit(tiny, [vector], config, store, classifier=always_natural)
    vec_id = next(a.vector_id for a in first if a.kind == "vector")
    store.path(vec_id).write_text("{ truncated", encoding="utf-8")
    second = run_audit(tiny, [vector], config, store, classifier=always_natural)
    assert next(a for a in second if a.kind == "vector").best.ids == next(a for a in first if a.kind == "vector").best.ids
    assert store.load(vec_id) is not None
