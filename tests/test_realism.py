"""Realism classifier: features, AUC, fitting and calibration, weight files (round trip, bad files, the previous
version), judge features, dataset splits by cluster, reproducible training."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from realize.data.errors import UserInputError
from realize.scorers.realism.dataset import (
    NATURAL_SOURCES,
    NEAR_NATURAL_SOURCES,
    TRAIN_ONLY_KINDS,
    RealismDatasetConfig,
    build_realism_dataset,
)
from realize.scorers.realism import (
    DEFAULT_WEIGHTS,
    FAST_WEIGHTS,
    RealismTrainConfig,
    auc,
    best_threshold,
    calibrated_threshold,
    fit_classifier,
    load_classifier,
    realism_scores,
    save_classifier,
)
from realize.scorers.realism import model as realism_model
from realize.scorers.realism.features import (
    ALL_FEATURE_NAMES,
    FEATURE_NAMES,
    V1_FEATURE_NAMES,
    extract_features,
    select_columns,
)
from realize.scorers.realism.labels import read_reader_labels
from realize.scorers.realism.text_features import shape_features


def test_features_shape_and_finite(tiny) -> None:
    texts = ["Explain it like I am five years old.", "zxq;;; 9f8AS]]", "日本語 テキスト ok"]
    x = extract_features(tiny, texts, batch_size=2)
    assert x.shape == (3, len(FEATURE_NAMES))
    assert torch.isfinite(x).all()
    col = FEATURE_NAMES.index
    assert x[2, col("frac_odd_unicode")] > x[0, col("frac_odd_unicode")] == 0
    assert x[1, col("max_punct_run")] >= 3 and x[0, col("ends_sentence_punct")] == 1.0
    assert extract_features(tiny, texts[:1]).allclose(x[:1], atol=1e-4)  # batching does not change rows
    with_judge = extract_features(tiny, texts, judge=tiny)
    assert with_judge.shape == (3, len(ALL_FEATURE_NAMES))
    pair = ["mean_surprisal", "end_surprisal"]
    judge_cols = select_columns(with_judge, ALL_FEATURE_NAMES, [f"judge_{n}" for n in pair])
    torch.testing.assert_close(judge_cols, select_columns(x, FEATURE_NAMES, pair), atol=1e-4, rtol=1e-4)  # same block


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
    assert not model.uses_judge
    scores = realism_scores(tiny, texts, model)
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)


def test_shipped_weights_load() -> None:
    model = load_classifier(DEFAULT_WEIGHTS)
    assert set(model.feature_names) <= set(ALL_FEATURE_NAMES)
    assert model.metadata.get("metrics", {}).get("auc", 0) > 0.9
    assert 0.0 < model.threshold < 1.0 and model.calibration[0] > 0


def test_previous_weights_need_opt_in() -> None:
    from realize.commands.train_realism import PREVIOUS_WEIGHTS

    with pytest.raises(UserInputError, match="other features"):
        load_classifier(PREVIOUS_WEIGHTS)
    old = load_classifier(PREVIOUS_WEIGHTS, check_version=False)
    assert old.feature_names == V1_FEATURE_NAMES  # v2 keeps every v1 feature, so old weights can be compared
    assert old.calibration == (1.0, 0.0)


def test_calibrated_threshold_passes_naturals() -> None:
    g = torch.Generator().manual_seed(3)
    nat, neg = torch.rand(200, generator=g) * 0.6 + 0.4, torch.rand(200, generator=g) * 0.6
    s, y = torch.cat([nat, neg]), torch.cat([torch.ones(200), torch.zeros(200)])
    for share in (0.9, 0.97, 1.0):
        t = calibrated_threshold(s, y, share)
        assert float((nat >= t).float().mean()) >= share
    assert calibrated_threshold(s, y, 0.9) >= calibrated_threshold(s, y, 1.0)


def test_validation_calibrates(tmp_path) -> None:
    x, y = _synthetic(400)
    model = fit_classifier(x[:200], y[:200], FEATURE_NAMES, RealismTrainConfig(steps=30),
                           validation=(x[200:], y[200:]))
    assert model.calibration != (1.0, 0.0) and model.calibration[0] > 0
    assert float((model.predict_proba(x[200:])[y[200:] > 0.5] >= model.threshold).float().mean()) >= 0.97
    save_classifier(model, tmp_path / "w.json")
    torch.testing.assert_close(load_classifier(tmp_path / "w.json").predict_proba(x), model.predict_proba(x))


def test_realism_scores_with_judge(tiny, monkeypatch) -> None:
    texts = ["Explain it like I am five years old.", "zxq;;; 9f8AS]]", "Write a short poem about the sea."]
    names = ("mean_surprisal", "judge_mean_surprisal", "judge_max_word_excess")
    x = select_columns(extract_features(tiny, texts, judge=tiny), ALL_FEATURE_NAMES, names)
    model = fit_classifier(x, torch.tensor([1.0, 0.0, 1.0]), names, RealismTrainConfig(steps=5))
    assert model.uses_judge
    loaded: list[str] = []
    monkeypatch.setattr(realism_model, "load_judge", lambda name: loaded.append(name) or tiny)
    scores = realism_scores(tiny, texts, model)
    assert loaded and torch.allclose(torch.tensor(scores), model.predict_proba(x))


_SMALL = dict(n_random_tokens=20, n_keyboard_mash=10, n_per_corruption=15, n_per_train_only=10, n_lm_samples=4,
              max_sample_tokens=8)


def test_dataset_splits_by_cluster(tiny, tmp_path) -> None:
    mined = tmp_path / "mined.jsonl"
    rows = [{"text": "Explain it like a recently child.", "generator": "mined_gcg", "label": 0,
             "parent": "Explain it to a child.", "target": "Explain it like I am five years old."},
            {"text": "It feels so bad.", "generator": "mined_beam", "label": 1, "parent": None, "target": "x"},
            {"text": "unsure one", "generator": "mined_beam", "label": None, "parent": None, "target": "x"}]
    mined.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = RealismDatasetConfig(**_SMALL, mined_path=str(mined))
    ds = build_realism_dataset(tiny, config)
    assert set(ds.column_names) >= {"text", "label", "source", "split", "cluster"}
    out = ds.to_list()
    assert {r["split"] for r in out} == {"train", "validation", "test"}
    by_cluster: dict[str, set[str]] = {}
    for r in out:
        if r["cluster"] and r["source"] != "mined_natural_looking":
            by_cluster.setdefault(r["cluster"], set()).add(r["split"])
    assert all(len(v) == 1 for v in by_cluster.values())  # corruptions share their parent's split
    assert {r["source"] for r in out if r["label"] == 1} >= {"natural_prompts", "contexts"}
    assert "positive_prompts" not in NATURAL_SOURCES
    assert {r["source"] for r in out} >= set(NEAR_NATURAL_SOURCES)
    gcg = [r for r in out if r["source"] == "mined_gcg"]
    assert len(gcg) == 1 and gcg[0]["label"] == 0
    assert [r["split"] for r in out if r["source"] == "mined_natural_looking"] == ["test"]
    assert "unsure one" not in {r["text"] for r in out}
    assert len({r["text"] for r in out}) == len(out)
    again = build_realism_dataset(tiny, config)
    assert list(again["text"]) == list(ds["text"]) and list(again["split"]) == list(ds["split"])
    assert {r["source"] for r in out} >= set(TRAIN_ONLY_KINDS)
    assert all(r["label"] == 0 and r["cluster"] for r in out if r["source"] in TRAIN_ONLY_KINDS)
    # Train-only kinds come from their own RNG, after everything else: the other rows do not move.
    without = build_realism_dataset(tiny, replace(config, n_per_train_only=0)).to_list()
    assert [r for r in out if r["source"] not in TRAIN_ONLY_KINDS] == without


def test_reader_labels_remove_natural_looking_corruptions(tiny, tmp_path) -> None:
    plain = build_realism_dataset(tiny, RealismDatasetConfig(**_SMALL)).to_list()
    drops = [r for r in plain if r["source"] == "function_drop"]
    swaps = [r for r in plain if r["source"] == "word_swap_common"]
    assert drops and swaps
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"text": drops[0]["text"], "kind": "function_drop", "label": 1}) + "\n"
                      + json.dumps({"text": swaps[0]["text"], "kind": "word_swap_common", "label": 0}) + "\n")
    out = build_realism_dataset(tiny, RealismDatasetConfig(**_SMALL, reader_labels_path=str(labels))).to_list()
    by_text = {r["text"]: r for r in out}
    moved = by_text[drops[0]["text"]]
    assert (moved["source"], moved["label"], moved["split"]) == ("corruption_natural_looking", 1, "test")
    assert by_text[swaps[0]["text"]]["source"] == "word_swap_common" and by_text[swaps[0]["text"]]["label"] == 0
    assert len(out) == len(plain)  # nothing else changes
    assert sum(r["source"] != p["source"] for r, p in zip(out, plain, strict=True)) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "x", "label": "yes"}) + "\n")
    with pytest.raises(UserInputError, match="bad.jsonl"):
        read_reader_labels(bad)


def test_train_realism_rejects_a_negative_train_only_count(monkeypatch, capsys) -> None:
    from realize.cli import main
    from realize.commands import train_realism

    monkeypatch.setattr(train_realism, "load_model", lambda name: pytest.fail("model loaded before the check"))
    assert main(["train-realism", "--train-only-kinds", "-1", "--dry-run"]) == 2
    assert "--train-only-kinds: expected a count >= 0, got -1" in capsys.readouterr().err


def test_shipped_reader_labels_cover_the_near_natural_kinds() -> None:
    from realize.commands.train_realism import DEFAULT_READER_LABELS

    rows = [json.loads(line) for line in DEFAULT_READER_LABELS.read_text(encoding="utf-8").splitlines()]
    assert {r["kind"] for r in rows} == set(NEAR_NATURAL_SOURCES)
    assert {r["label"] for r in rows} == {0, 1}
    assert len(read_reader_labels(DEFAULT_READER_LABELS)) == len(rows)


def test_train_and_evaluate_on_tiny(tiny, tmp_path, capsys) -> None:
    from realize.commands.train_realism import PREVIOUS_WEIGHTS
    from realize.scorers.realism.evaluate import print_report, train_and_evaluate

    config = RealismDatasetConfig(n_random_tokens=40, n_keyboard_mash=20, n_per_corruption=30, n_per_train_only=20,
                                  n_lm_samples=10, max_sample_tokens=8)
    data_path = tmp_path / "ds.jsonl"
    train = RealismTrainConfig(steps=20)
    model, report = train_and_evaluate(tiny, config, train, use_cache=False, save_dataset=str(data_path),
                                       previous=PREVIOUS_WEIGHTS)
    assert report["n"]["train"] > 0 and report["n"]["validation"] > 0 and report["n"]["test"] > 0
    assert 0.5 < report["auc_test"] <= 1.0  # keyboard mash and random tokens are easy even on a random LM
    assert set(report["per_kind"]) >= set(NEAR_NATURAL_SOURCES) | {"random_tokens", "keyboard_mash"}
    tested = {k: r for k, r in report["per_kind"].items() if k not in TRAIN_ONLY_KINDS}
    assert all("auc_held_out" in r and "auc_previous" in r for r in tested.values())
    assert set(report["per_kind"]) - set(tested) == set(TRAIN_ONLY_KINDS)  # trained on, reported, never held out
    assert not any("auc_held_out" in report["per_kind"][k] for k in TRAIN_ONLY_KINDS)
    assert report["per_kind"]["function_drop"]["family_held_out"] == ["aux_content_drop", "aux_function_swap"]
    assert 0.0 <= report["per_kind"]["function_drop"]["auc_family_held_out"] <= 1.0
    assert "auc_family_held_out" not in report["per_kind"]["random_tokens"]  # no train-only relatives
    assert report["natural_pass_validation"] >= 0.97
    assert model.metadata["model"] == tiny.name and model.metadata["metrics"]["auc"] == report["auc_test"]
    assert len(data_path.read_text(encoding="utf-8").splitlines()) == sum(report["n"].values())
    print_report(report)
    assert "AUC out" in capsys.readouterr().out
    save_classifier(model, tmp_path / "w.json")
    assert load_classifier(tmp_path / "w.json").metadata["seed"] == 0
    again, _ = train_and_evaluate(tiny, config, train, use_cache=False, leave_one_out=False)
    save_classifier(again, tmp_path / "w2.json")  # same seed -> same weights
    strip = lambda p: {k: v for k, v in json.loads(p.read_text()).items() if k != "metadata"}  # noqa: E731
    assert strip(tmp_path / "w.json") == strip(tmp_path / "w2.json")


@pytest.mark.slow
def test_shipped_classifier_on_real_model() -> None:
    from realize.data.models import load_model

    lm = load_model()
    natural = ["Explain it like I am five years old.", "You are a pirate.", "Answer in French, please."]
    odd = ["ounced)=\\ Ingredients cornerstone.scalablytyped quaint", "asdf jkl; qwer zxcv", "the the is of ,, and"]
    # near-natural outputs of the engine quoted in the issue (held-out GCG/fluent searches): caught
    engine = ["Can you make it a runny yotained?", "Explain it like a recently child.",
              "Explain it like to a we child."]
    for weights in (DEFAULT_WEIGHTS, FAST_WEIGHTS, DEFAULT_WEIGHTS.parent / "realism_v3.json",
                    DEFAULT_WEIGHTS.parent / "realism_v3_fast.json", DEFAULT_WEIGHTS.parent / "realism_v4.json"):
        classifier = load_classifier(weights)
        scores = realism_scores(lm, natural + odd + engine, classifier)
        assert min(scores[:3]) > max(scores[3:])
        assert all(s >= classifier.threshold for s in scores[:3])
        assert sum(s < classifier.threshold for s in scores[6:]) >= 2
