"""Realism classifier: features, AUC, fitting, weight files (round trip and bad files), dataset splits."""

from __future__ import annotations

import json
import math

import pytest
import torch

from realize.data.errors import UserInputError
from realize.data.realism_dataset import HELD_OUT_SOURCES, RealismDatasetConfig, build_realism_dataset
from realize.scorers.realism import (
    DEFAULT_WEIGHTS,
    RealismTrainConfig,
    auc,
    best_threshold,
    fit_classifier,
    load_classifier,
    realism_scores,
    save_classifier,
)
from realize.scorers.realism_features import FEATURE_NAMES, extract_features, shape_features


def test_features_shape_and_finite(tiny) -> None:
    texts = ["Explain it like I am five years old.", "zxq;;; 9f8AS]]", "日本語 テキスト ok"]
    x = extract_features(tiny, texts, batch_size=2)
    assert x.shape == (3, len(FEATURE_NAMES))
    assert torch.isfinite(x).all()
    col = FEATURE_NAMES.index
    assert x[2, col("frac_odd_unicode")] > x[0, col("frac_odd_unicode")] == 0
    assert x[1, col("max_punct_run")] >= 3 and x[0, col("ends_sentence_punct")] == 1.0
    assert extract_features(tiny, texts[:1]).allclose(x[:1], atol=1e-4)  # batching does not change rows


def test_shape_features_case_changes() -> None:
    plain = shape_features("hello there friend", ["hello", " there", " friend"])
    odd = shape_features("heLLo thEre frIend", ["he", "LL", "o", " th", "E", "re", " fr", "I", "end"])
    i = FEATURE_NAMES.index("inner_case_changes_per_word") - FEATURE_NAMES.index("log_n_tokens")
    assert odd[i] > plain[i] == 0


def test_auc_matches_pairwise_count() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 5, (40,), generator=g).float()  # many ties
    y = torch.randint(0, 2, (40,), generator=g).float()
    pos, neg = s[y > 0.5], s[y <= 0.5]
    ref = ((pos[:, None] > neg[None, :]).float() + 0.5 * (pos[:, None] == neg[None, :]).float()).mean()
    assert auc(s, y) == pytest.approx(float(ref))
    assert math.isnan(auc(s, torch.ones(40)))
    assert auc(torch.tensor([0.1, 0.9]), torch.tensor([0.0, 1.0])) == 1.0


def _synthetic(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(n, generator=g) < 0.4).float()
    x = torch.randn(n, len(FEATURE_NAMES), generator=g)
    x[:, 0] += 3 * y  # one informative feature
    return x, y


@pytest.mark.parametrize("hidden", [0, 4])
def test_fit_save_load_round_trip(tmp_path, hidden: int) -> None:
    x, y = _synthetic()
    model = fit_classifier(x, y, FEATURE_NAMES, RealismTrainConfig(hidden=hidden, steps=50))
    assert auc(model.predict_proba(x), y) > 0.95
    assert 0.0 <= model.threshold <= 1.0
    path = tmp_path / "w.json"
    save_classifier(model, path)
    loaded = load_classifier(path)
    torch.testing.assert_close(loaded.predict_proba(x), model.predict_proba(x))
    assert loaded.threshold == model.threshold
    assert not list(tmp_path.glob("*.tmp"))


def test_best_threshold_separates() -> None:
    s, y = torch.tensor([0.1, 0.2, 0.7, 0.8]), torch.tensor([0.0, 0.0, 1.0, 1.0])
    t = best_threshold(s, y)
    assert 0.2 < t <= 0.7


def test_bad_weight_files(tmp_path) -> None:
    with pytest.raises(UserInputError, match="train-realism") as err:
        load_classifier(tmp_path / "missing.json")
    assert "missing.json" in str(err.value)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserInputError, match="bad.json.*train-realism"):
        load_classifier(bad)
    x, y = _synthetic()
    model = fit_classifier(x, y, FEATURE_NAMES, RealismTrainConfig(steps=5))
    save_classifier(model, bad)
    raw = json.loads(bad.read_text())
    raw["mean"] = raw["mean"][:-1]
    bad.write_text(json.dumps(raw))
    with pytest.raises(UserInputError, match="corrupt"):
        load_classifier(bad)


def test_realism_scores_are_probabilities(tiny) -> None:
    texts = ["Explain it like I am five years old.", "zxq;;; 9f8AS]]", "Write a short poem about the sea."]
    x = extract_features(tiny, texts)
    model = fit_classifier(x, torch.tensor([1.0, 0.0, 1.0]), FEATURE_NAMES, RealismTrainConfig(steps=5))
    scores = realism_scores(tiny, texts, model)
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)


def test_shipped_weights_load() -> None:
    model = load_classifier(DEFAULT_WEIGHTS)
    assert model.feature_names == FEATURE_NAMES
    assert model.metadata.get("metrics", {}).get("auc", 0) > 0.9


def test_dataset_splits_by_source(tiny) -> None:
    config = RealismDatasetConfig(n_random_tokens=20, n_keyboard_mash=10, n_per_corruption=15, n_lm_samples=4,
                                  max_sample_tokens=8)
    ds = build_realism_dataset(tiny, config)
    assert set(ds.column_names) >= {"text", "label", "source", "split"}
    rows = ds.to_list()
    assert all(r["split"] == "test" for r in rows if r["source"] in HELD_OUT_SOURCES)
    assert {r["source"] for r in rows if r["label"] == 1} >= {"natural_prompts", "contexts"}
    train_sources = {r["source"] for r in rows if r["split"] == "train"}
    assert not train_sources & set(HELD_OUT_SOURCES)
    assert len({r["text"] for r in rows}) == len(rows)
    again = build_realism_dataset(tiny, config)
    assert list(again["text"]) == list(ds["text"])  # deterministic given the seed


def test_train_and_evaluate_on_tiny(tiny, tmp_path, capsys) -> None:
    from realize.commands.train_realism import print_report, train_and_evaluate

    config = RealismDatasetConfig(n_random_tokens=40, n_keyboard_mash=20, n_per_corruption=30, n_lm_samples=10,
                                  max_sample_tokens=8)
    data_path = tmp_path / "ds.jsonl"
    model, report = train_and_evaluate(tiny, config, RealismTrainConfig(steps=20), use_cache=False,
                                       save_dataset=str(data_path))
    assert report["n_train"] > 0 and report["n_test"] > 0
    assert 0.5 < report["test"]["auc"] <= 1.0  # keyboard mash and random tokens are easy even on a random LM
    assert set(report["test"]["per_source_accuracy"]) >= set(HELD_OUT_SOURCES)
    assert model.metadata["model"] == tiny.name and model.metadata["metrics"]["auc"] == report["test"]["auc"]
    assert len(data_path.read_text(encoding="utf-8").splitlines()) == report["n_train"] + report["n_test"]
    print_report(report)
    assert "hard-slice AUC" in capsys.readouterr().out
    save_classifier(model, tmp_path / "w.json")
    assert load_classifier(tmp_path / "w.json").metadata["seed"] == 0


@pytest.mark.slow
def test_shipped_classifier_on_real_model() -> None:
    from realize.data.models import load_model

    lm = load_model()
    natural = ["Explain it like I am five years old.", "You are a pirate.", "Answer in French, please."]
    odd = ["ounced)=\\ Ingredients cornerstone.scalablytyped quaint", "asdf jkl; qwer zxcv", "the the is of ,, and"]
    scores = realism_scores(lm, natural + odd)
    assert min(scores[:3]) > max(scores[3:])
