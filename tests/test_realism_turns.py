"""Realism version 3: token statistics with the end-of-text probability, change points, the interior end, the tail
read alone, two-LM agreement, the "unverified" band, and the data files the dataset reads."""

from __future__ import annotations

import json
import math

import pytest
import torch

from realize.scorers.perplexity import token_statistics
from realize.scorers.realism import RealismClassifier, RealismTrainConfig, fit_classifier, load_classifier
from realize.scorers.realism.dataset import BENIGN_SOURCE, FAMILY_SOURCES, RealismDatasetConfig, build_realism_dataset
from realize.scorers.realism.features import (
    AGREE_FEATURES,
    ALL_FEATURE_NAMES,
    FEATURE_NAMES,
    V2_ALL_FEATURE_NAMES,
    extract_features,
    select_columns,
)
from realize.scorers.realism.model import DEFAULT_WEIGHTS, save_classifier
from realize.scorers.realism.sources import BENIGN_PATH, load_benign, read_family_negatives
from realize.scorers.realism.stats import TextStats, text_stats
from realize.scorers.realism.train import band_lower_edge
from realize.scorers.realism.turns import (
    JUDGE_TURN_BLOCK,
    TURN_BLOCK,
    agree_row,
    change_point,
    cusum,
    interior_end,
    tail_ids,
    turn_row,
)


def _stats(s: list[float], end_after: list[float] | None = None) -> TextStats:
    n = len(s)
    return TextStats(tuple(range(n)), 0, tuple(s), tuple([1.0] * n), tuple([0.0] * n),
                     tuple(end_after or [-5.0] * n), 2.0)


def test_cusum_finds_the_rise() -> None:
    flat, rise = [2.0] * 6, [6.0] * 5
    up, k, down = cusum(flat + rise)
    assert k == 6 and up > 1.0 and down <= 0.0
    up2, k2, down2 = cusum(rise + flat)  # a drop, not a rise
    assert down2 > 1.0 and up2 < up
    assert cusum([1.0, 2.0]) == (0.0, 2, 0.0)  # too short: neutral
    assert cusum([3.0] * 8)[0] == pytest.approx(0.0)


def test_change_point_and_interior_end_on_a_suffix() -> None:
    s = [9.0, 2.0, 2.5, 2.0, 1.5, 6.0, 7.0, 6.5, 7.5]  # first token has no context; suffix from index 5
    end = [-6.0, -6.0, -5.0, -4.0, -0.5, -7.0, -8.0, -7.0, -3.0]  # the text could have ended after index 4
    st = _stats(s, end)
    up, k, _ = change_point(st)
    assert k == 5 and up > 1.0
    assert interior_end(st) == 4 and tail_ids(st) == [5, 6, 7, 8]
    row = dict(zip(TURN_BLOCK, turn_row(st, with_entropy=True), strict=True))
    assert row["interior_end_logprob"] == -0.5 and row["after_end_first_surprisal"] == 6.0
    assert row["cp_up_after_mean"] > row["cp_up_before_mean"]
    assert len(turn_row(st, with_entropy=False)) == len(JUDGE_TURN_BLOCK)
    short = turn_row(_stats([3.0, 2.0]), with_entropy=True)
    assert all(math.isfinite(v) for v in short) and interior_end(_stats([3.0, 2.0])) is None


def test_token_statistics_extra_ids_are_log_probs(tiny) -> None:
    ids = tiny.tokenizer("Explain it like I am five.", add_special_tokens=False)["input_ids"]
    eos = int(tiny.tokenizer.eos_token_id)
    for with_entropy in (True, False):
        st = token_statistics(tiny, [[1]], [ids + [eos]], with_entropy=with_entropy, extra_ids=[eos, 5])[0]
        with torch.no_grad():
            logits = tiny.model(torch.tensor([[1] + ids + [eos]])).logits[0, :-1].float()
        ref = torch.log_softmax(logits, -1)[:, [eos, 5]]
        torch.testing.assert_close(st.extra, ref, atol=1e-4, rtol=1e-4)
        assert st.extra[-1, 0] == pytest.approx(-float(st.surprisal[-1]), abs=1e-4)  # p(eos) at the end
    plain = token_statistics(tiny, [[1]], [ids])[0]
    assert plain.extra is not None and plain.extra.shape == (len(ids), 0)


def test_reduced_precision_statistics_do_not_depend_on_batch_companions(tiny) -> None:
    """In bfloat16 the padded width changes the numbers (~0.09 nats on the Gemma judge), so a text's statistics
    would depend on what it is batched with; batches of one length make them equal its unbatched forward's."""
    import copy

    half = type(tiny)(model=copy.deepcopy(tiny.model).to(torch.bfloat16), tokenizer=tiny.tokenizer,
                      name="tiny-bf16", path=tiny.path)
    short = tiny.tokenizer("You are a pirate.", add_special_tokens=False)["input_ids"]
    long = tiny.tokenizer("Write a long story about the history of the sea and of every ship that sailed on it, "
                          "one after another, with dates and names.", add_special_tokens=False)["input_ids"] * 3
    alone = token_statistics(half, [[1]], [short])[0]
    for companions in ([long], [short, long], [long] * 5):
        batched = token_statistics(half, [[1]] * (1 + len(companions)), [short] + companions)[0]
        assert torch.equal(batched.surprisal, alone.surprisal)
        assert torch.equal(batched.entropy, alone.entropy)


def test_text_stats_cache_round_trip(tiny, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("REALIZE_CACHE", str(tmp_path))
    texts = ["Explain it like I am five years old.", "Write a short poem about the sea. Make it rhyme."]
    fresh = text_stats(tiny, texts)
    cached = text_stats(tiny, texts, use_cache=True)
    again = text_stats(tiny, texts, use_cache=True)  # read back from the file
    assert list(tmp_path.rglob("*.json"))
    for a, b, c in zip(fresh, cached, again, strict=True):
        assert a.ids == b.ids == c.ids and len(a.end_after) == len(a.surprisal)
        assert torch.allclose(torch.tensor(a.surprisal), torch.tensor(c.surprisal), atol=1e-5)
    x = extract_features(tiny, texts, judge=tiny, use_cache=True)
    torch.testing.assert_close(x, extract_features(tiny, texts, judge=tiny), atol=1e-4, rtol=1e-4)


def test_agreement_of_the_same_model_is_perfect(tiny) -> None:
    text = "Write a short poem about the sea and the wind."
    st = text_stats(tiny, [text])[0]
    row = dict(zip(AGREE_FEATURES, agree_row(text, (tiny.tokenizer, st), (tiny.tokenizer, st)), strict=True))
    assert row["agree_mean_diff"] == pytest.approx(0.0) and row["agree_max_diff"] == pytest.approx(0.0)
    assert row["agree_word_corr"] == pytest.approx(1.0, abs=1e-6)
    x = extract_features(tiny, [text, "zzq 9f ;;"], judge=tiny, with_tail=False)
    assert x.shape == (2, len(ALL_FEATURE_NAMES)) and torch.isfinite(x).all()
    assert float(select_columns(x, ALL_FEATURE_NAMES, ["tail_pmi"]).abs().sum()) == 0.0  # skipped


def test_band_and_classify(tmp_path) -> None:
    n = len(FEATURE_NAMES)
    model = RealismClassifier(FEATURE_NAMES, torch.zeros(n), torch.ones(n), ((torch.zeros(1, n), torch.zeros(1)),),
                              threshold=0.4, unnatural_below=0.1)
    assert model.band == (0.1, 0.4)
    assert [model.classify(p) for p in (0.05, 0.1, 0.39, 0.4, 0.9)] == [
        "unnatural", "unverified", "unverified", "natural", "natural"]
    plain = RealismClassifier(FEATURE_NAMES, torch.zeros(n), torch.ones(n), ((torch.zeros(1, n), torch.zeros(1)),))
    assert plain.band == (0.5, 0.5) and plain.classify(0.49) == "unnatural"  # no band: two answers
    save_classifier(model, tmp_path / "w.json")
    assert load_classifier(tmp_path / "w.json").band == (0.1, 0.4)
    shipped = load_classifier(DEFAULT_WEIGHTS)  # written before the band existed: loads without one
    assert shipped.band[0] <= shipped.threshold


def test_fit_picks_a_band_below_the_threshold() -> None:
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(600, generator=g) < 0.5).float()
    x = torch.randn(600, 3, generator=g) + 1.5 * y[:, None]
    model = fit_classifier(x[:300], y[:300], ("a", "b", "c"), RealismTrainConfig(steps=30, min_natural_pass=0.9),
                           validation=(x[300:], y[300:]))
    lower, upper = model.band
    assert lower < upper == model.threshold
    p = model.predict_proba(x[300:])
    assert float((p[y[300:] > 0.5] < lower).float().mean()) <= 0.005 + 1e-9
    s = torch.tensor([0.1, 0.2, 0.3, 0.9]), torch.tensor([1.0, 1.0, 1.0, 0.0])
    assert band_lower_edge(*s, threshold=0.25, max_natural_reject=0.0) == pytest.approx(0.1)
    assert band_lower_edge(*s, threshold=0.15, max_natural_reject=0.5) == 0.15  # never above the threshold
    with pytest.raises(ValueError, match="max_natural_reject"):
        RealismTrainConfig(max_natural_reject=1.0)


def test_version_2_weights_select_their_columns() -> None:
    shipped = load_classifier(DEFAULT_WEIGHTS)
    assert set(shipped.feature_names) <= set(V2_ALL_FEATURE_NAMES) and not shipped.uses_tail
    assert FEATURE_NAMES[: len(V2_ALL_FEATURE_NAMES) - 20] == V2_ALL_FEATURE_NAMES[:-20]  # v3 appends, never moves


def test_shipped_data_files() -> None:
    benign = load_benign()
    assert len(benign) >= 250 and BENIGN_PATH.is_file()
    assert len({c for _, c in benign}) >= 40  # many templates, split by cluster
    assert len({t for t, _ in benign}) == len(benign)
    rows = read_family_negatives()
    for row in rows:
        assert row["text"] and row["family"] and "objective" in row and "seed" in row and "run" in row
        if row["placement"] == "suffix":
            assert str(row["text"]).startswith(str(row["parent"])[: int(row["suffix_start"]) - 1])


def test_dataset_reads_benign_and_families(tiny, tmp_path) -> None:
    negatives = tmp_path / "neg"
    negatives.mkdir()
    rows = [{"text": "Explain it like I am five years old. The answer is listed under D.21", "family": "flrt",
             "run": 0, "parent": "Explain it like I am five years old.", "placement": "suffix", "suffix_start": 37,
             "objective": {"kind": "activation"}, "seed": 0},
            {"text": "Ahoy the sea is calm tonight my friend", "family": "beast", "run": 3, "parent": None,
             "placement": "whole", "objective": {"kind": "target_string"}, "seed": 3},
            {"run": 4, "family": "beast", "text": None, "seed": 4}]
    for family in ("flrt", "beast"):
        (negatives / f"{family}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows
                                                           if r["family"] == family))
    benign = tmp_path / "benign.jsonl"
    benign.write_text("".join(json.dumps({"prompt": f"Translate to German: sentence number {i} is here.",
                                          "cluster": f"t{i % 5}"}) + "\n" for i in range(20)))
    small = dict(n_random_tokens=5, n_keyboard_mash=5, n_per_corruption=3, n_lm_samples=2, max_sample_tokens=8)
    base = build_realism_dataset(tiny, RealismDatasetConfig(**small, benign_path=None, negatives_dir=None)).to_list()
    out = build_realism_dataset(tiny, RealismDatasetConfig(**small, benign_path=str(benign),
                                                           negatives_dir=str(negatives))).to_list()
    assert out[: len(base)] == base  # added last: the other rows do not move
    new = out[len(base):]
    assert sum(r["source"] == BENIGN_SOURCE and r["label"] == 1 for r in new) == 20
    by_cluster: dict[str, set[str]] = {}
    for r in new:
        if r["source"] == BENIGN_SOURCE:
            by_cluster.setdefault(r["cluster"], set()).add(r["split"])
    assert all(len(v) == 1 for v in by_cluster.values())
    gen = {r["source"]: r for r in new if r["source"] in FAMILY_SOURCES}
    assert set(gen) == {"gen_flrt", "gen_beast"} and all(r["label"] == 0 for r in gen.values())
    parent = next(r for r in base if r["text"] == "Explain it like I am five years old.")
    assert (gen["gen_flrt"]["split"], gen["gen_flrt"]["cluster"]) == (parent["split"], parent["cluster"])
    assert gen["gen_beast"]["cluster"] == "beast:run3"


def test_feature_code_digest_is_stable(monkeypatch) -> None:
    from realize.scorers.realism import feature_code_digest
    from realize.scorers.realism import model as realism_model

    first = feature_code_digest()
    assert len(first) == 64 and first == feature_code_digest()
    monkeypatch.setattr(realism_model, "FEATURE_VERSION", "999")
    assert feature_code_digest() != first  # what goes in changes the digest


def test_judge_names(monkeypatch) -> None:
    from realize.data.errors import UserInputError
    from realize.scorers.realism import model as realism_model

    monkeypatch.setitem(realism_model._JUDGES, realism_model.JUDGE_MODEL, "loaded")
    assert realism_model.load_judge("gemma3-270m") == "loaded"  # data.models' name for the same GGUF
    with pytest.raises(UserInputError, match="only"):
        realism_model.load_judge("llama")
