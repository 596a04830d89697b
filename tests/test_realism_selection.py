"""The realism selection benchmark's ensemble (`benchmarks/bench_realism_selection.py`): several MLPs fit on the same
rows become one classifier in the shipped weight format whose raw logit is their mean, and a held-out kind takes its
corrupted benign prompts with it."""

from __future__ import annotations

import random
import sys
from dataclasses import replace
from pathlib import Path

import torch

from realize.scorers.realism.model import load_classifier, save_classifier
from realize.scorers.realism.train import Prepared, RealismTrainConfig, fit_classifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_realism_selection import BENIGN_CORRUPT, Candidate, Fitter, averaged  # noqa: E402

NAMES = ("mean_surprisal", "max_surprisal", "std_surprisal", "log_worst_window_ppl")


def _toy(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, len(NAMES), generator=gen)
    y = (x[:, 0] - x[:, 1] ** 2 + 0.3 * torch.randn(n, generator=gen) > 0).float()
    return x, y


def _raw(model):
    return replace(model, calibration=(1.0, 0.0))


def test_ensemble_is_one_mlp_whose_raw_logit_is_the_mean(tmp_path: Path) -> None:
    x, y = _toy()
    models = [fit_classifier(x, y, NAMES, RealismTrainConfig(seed=s, hidden=8)) for s in range(3)]
    ensemble = averaged(models, x, y, RealismTrainConfig())
    assert ensemble.layers[0][0].shape == (24, len(NAMES))
    mean = torch.stack([_raw(m).logits(x) for m in models]).mean(0)
    assert torch.allclose(_raw(ensemble).logits(x), mean, atol=1e-5)
    assert ensemble.calibration != (1.0, 0.0)  # Platt-calibrated on the given rows
    lower, upper = ensemble.band
    assert 0.0 <= lower <= upper == ensemble.threshold
    path = tmp_path / "ensemble.json"
    save_classifier(ensemble, path)
    assert torch.allclose(load_classifier(path).predict_proba(x), ensemble.predict_proba(x), atol=1e-6)


def test_logistic_ensemble_averages_the_linear_maps_and_one_model_is_itself() -> None:
    x, y = _toy(seed=1)
    models = [fit_classifier(x, y, NAMES, RealismTrainConfig(hidden=0, l2=l2)) for l2 in (1e-3, 1.0)]  # same rows
    ensemble = averaged(models, x, y, RealismTrainConfig())
    mean = torch.stack([_raw(m).logits(x) for m in models]).mean(0)
    assert len(ensemble.layers) == 1
    assert torch.allclose(_raw(ensemble).logits(x), mean, atol=1e-5)
    assert averaged(models[:1], x, y, RealismTrainConfig()) is models[0]


def test_holding_out_a_kind_also_holds_out_its_corrupted_benign_prompts() -> None:
    rng = random.Random(0)
    sources = ["natural_prompts", "benign_tasks", "function_drop", BENIGN_CORRUPT + "function_drop", "char_swaps"] * 40
    labels = torch.tensor([1.0 if s in ("natural_prompts", "benign_tasks") else 0.0 for s in sources])
    x = torch.randn(len(sources), len(NAMES)) + labels[:, None]
    split = [rng.choice(["train", "validation"]) for _ in sources]
    rows = [{"source": s, "split": sp, "cluster": str(i % 7)} for i, (s, sp) in enumerate(zip(sources, split))]
    data = Prepared([f"t{i}" for i in range(len(sources))], labels, split, sources, x, NAMES, None, {}, rows)
    fitter = Fitter(data, NAMES)
    seen: list[int] = []

    import bench_realism_selection as bench

    def spy(data_, features, keep, names, config):
        seen.append(int(keep.sum()))
        return bench_fit(data_, features, keep, names, config)

    bench_fit = bench.fit_split
    bench.fit_split = spy
    try:
        fitter.fit(Candidate(0, 1e-2, 1), frozenset({"function_drop"}))
        fitter.fit(Candidate(0, 1e-2, 1), frozenset({"char_swaps"}))
    finally:
        bench.fit_split = bench_fit
    assert seen == [len(sources) - 80, len(sources) - 40]  # 40 rows of the kind and 40 of its benign version
