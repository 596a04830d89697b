"""Results schema and the dataset-of-realizable-steers round trip (offline load_dataset)."""

from __future__ import annotations

import math

import datasets
import pytest

from realize.data.errors import UserInputError
from realize.data.results_dataset import COLUMNS, export_dataset, read_rows, write_rows


def _row(i: int, verdict: str, kind: str = "vector", vector_verdict: str = "realizable") -> dict:
    """A results row whose *prompt* earns `verdict`; its vector's verdict is `vector_verdict`."""
    return {
        "vector_id": f"id{i}", "vector_name": f"v{i}", "source_file": "f.safetensors", "source_sha256": "ab" * 32,
        "kind": kind, "axis": "activation", "model": "smollm2-135m-instruct", "model_sha256": "cd" * 32,
        "realize_version": "0.3.0", "source_digest": "0123456789abcdef", "layer": 12, "layers": [12], "scale": 1.5,
        "target_norm": 5.0, "strength": [0.04], "per_layer_specific_cos": [],
        "method": "melbo", "attack": "fluent", "prompt": f"Explain it simply {i}.", "prompt_ids": [1, 2, i],
        "is_best": True, "prompt_verdict": verdict, "selection_specific_cos": 0.75, "cos_test": 0.9,
        "specific_cos_test": 0.7, "per_position_cos": 0.5, "norm_ratio": 1.1, "fve": 0.6, "perplexity": 30.0,
        "worst_window_perplexity": 80.0, "realism": 0.9, "behavior_recovery": float("nan"),
        "selection_recovery": float("nan"), "recovery_test": float("nan"), "direction_cos": float("nan"),
        "effect_ratio": float("nan"), "effect_kl": float("nan"),
        "verdict": vector_verdict, "direction_verdict": vector_verdict, "content": "specific",
        "content_margin": 0.2, "true_content_margin": 0.25, "content_cosine": float("nan"),
        "true_content_cosine": float("nan"), "unrelated_value": 0.1, "verdict_stability": 0.9,
        "null_percentile": 1.0, "realizability_score": 0.8, "score_low": 0.7, "score_high": 0.9,
        "magnitude_factor": 0.8, "realizable_scale": 2.0, "seed": 0, "budget": "quick", "seconds": 12.5,
    }


def test_write_and_read_rows(tmp_path):
    rows = [_row(0, "realizable"), _row(1, "not realizable")]
    path = write_rows(rows, tmp_path)
    back = read_rows(path)
    assert [r["prompt"] for r in back] == [r["prompt"] for r in rows]
    assert back[0]["prompt_ids"] == [1, 2, 0] and math.isnan(back[0]["behavior_recovery"])
    assert (tmp_path / "results.jsonl").read_text().count("\n") == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_rows_rejected(tmp_path):
    row = _row(0, "realizable")
    del row["realism"]
    with pytest.raises(ValueError, match="realism"):
        write_rows([row], tmp_path)
    assert not (tmp_path / "results.parquet").exists()


def test_export_dataset_round_trip_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    rows = [_row(0, "realizable"), _row(1, "partially realizable"), _row(2, "not realizable"),
            _row(3, "realizable", kind="positive")]
    n = export_dataset(rows, tmp_path / "ds", kinds=("vector",))
    assert n == 2
    card = (tmp_path / "ds" / "README.md").read_text()
    assert card.startswith("---\n") and "size_categories" in card and "license:" in card
    loaded = datasets.load_dataset(str(tmp_path / "ds"), split="train")
    assert loaded.num_rows == 2 and set(loaded.column_names) == set(COLUMNS)
    assert sorted(loaded["prompt_verdict"]) == ["partially realizable", "realizable"]
    assert loaded.features["prompt_ids"].feature.dtype == "int32"


def test_read_rows_errors(tmp_path):
    bad = tmp_path / "results.parquet"
    bad.write_bytes(b"nope")
    with pytest.raises(UserInputError, match="results.parquet"):
        read_rows(bad)


def test_atomic_output_permissions_and_failure(tmp_path):
    import os

    from realize.data.atomic import atomic_output, write_text_atomic

    write_text_atomic(tmp_path / "a.txt", "hello")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert (tmp_path / "a.txt").read_text() == "hello" and len(list(tmp_path.iterdir())) == 1


def test_export_keeps_prompts_on_their_own_numbers(tmp_path):
    """A gibberish frontier row of a realizable vector is not a realizing prompt: it stays out; so do controls
    unless asked for, and the card says how rows were chosen."""
    rows = [_row(0, "realizable"), _row(1, "not natural", vector_verdict="realizable"),
            _row(2, "not realizable", vector_verdict="realizable"), _row(3, "unverified"),
            _row(4, "realizable", kind="positive")]
    assert export_dataset(rows, tmp_path / "ds", provenance="model x") == 1
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "How rows were chosen" in card and "selection" in card and "model x" in card
    assert export_dataset(rows, tmp_path / "ds2", kinds=("vector", "positive")) == 2


def test_export_with_no_matching_rows_writes_only_the_card(tmp_path):
    export_dataset([_row(0, "realizable")], tmp_path / "ds")
    assert export_dataset([_row(0, "not realizable")], tmp_path / "ds") == 0
    assert not (tmp_path / "ds" / "data" / "train-00000-of-00001.parquet").exists()
    assert "num_examples: 0" in (tmp_path / "ds" / "README.md").read_text()
