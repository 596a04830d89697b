"""The dataset of audited steers shipped in the repo (datasets/audited-steers) is what its card says it is."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from realize.data.vectors import load_vectors
from realize.identity import file_sha256

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "datasets" / "audited-steers"
pytestmark = pytest.mark.skipif(not (DATASET / "data").is_dir(), reason="the dataset is not in this checkout")


def rows() -> list[dict]:
    return pq.read_table(DATASET / "data" / "train-00000-of-00001.parquet").to_pylist()


def test_every_shipped_vector_has_one_row_per_axis_with_its_file_digest() -> None:
    vectors = sorted(p for p in (DATASET / "vectors").iterdir() if p.is_file())
    by_file: dict[str, list[dict]] = {}
    for r in rows():
        by_file.setdefault(Path(r["source_file"]).name, []).append(r)
    assert sorted(by_file) == sorted(p.name for p in vectors)
    for path in vectors:
        found = by_file[path.name]
        assert sorted(r["axis"] for r in found) == ["activation", "behavior"], path.name
        assert {r["source_sha256"] for r in found} == {file_sha256(path)}, path.name
        assert all(r["kind"] == "vector" for r in found)
        assert {r["vector_notes"] for r in found} == {load_vectors(path)[0].notes}, path.name


def test_the_card_and_summary_count_the_rows_it_ships() -> None:
    summary = json.loads((DATASET / "summary.json").read_text(encoding="utf-8"))
    shipped = rows()
    assert summary["rows"] == len(shipped)
    assert summary["steers"] == len({r["vector_id"] for r in shipped})
    counted = Counter(r["verdict"] for r in shipped)
    assert sum((Counter(c) for c in summary["counts"].values()), Counter()) == counted
    assert f"({len(shipped)} rows," in (DATASET / "README.md").read_text(encoding="utf-8")


def test_the_rows_come_from_the_shipped_audit() -> None:
    audit = pq.read_table(DATASET / "audit" / "results.parquet").to_pylist()
    best = {(r["vector_id"], r["axis"]): r for r in audit if r["kind"] == "vector" and r["is_best"]}
    identity = json.loads((DATASET / "audit" / "audit.json").read_text(encoding="utf-8"))
    for r in rows():
        assert r["source_digest"] == identity["source"]
        source = best.get((r["vector_id"], r["axis"]))
        if source is not None:  # a steer with no natural candidate has no best prompt
            assert (source["prompt"], source["verdict"]) == (r["prompt"], r["verdict"])


def test_the_dataset_loads_offline_with_the_datasets_library() -> None:
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset(str(DATASET), split="train")
    assert loaded.num_rows == len(rows())
