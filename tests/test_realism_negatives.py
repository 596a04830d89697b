"""The fluent adversarial generator families (composition layer) on the tiny model: one run each gives rows with
their provenance; the driver writes JSON lines, drops natural text and repeats, and resumes."""

from __future__ import annotations

import json
import random

import pytest
import torch

from realize.realism_negatives import families, generate
from realize.realism_negatives.families import FAMILIES, run_family
from realize.realism_negatives.genetic import GeneticConfig, crossover, sentences
from realize.realism_negatives.objectives import SuffixObjective, draw_objective


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_runs_on_tiny(tiny, family) -> None:
    rows = []
    for k in range(3):  # a few draws: objectives and placements vary by run
        rows += run_family(tiny, family, random.Random(f"{family}:{k}"), k)
    assert rows, f"{family}: no output in three runs"
    for row in rows:
        assert row["family"] == family and isinstance(row["text"], str) and row["text"].strip()
        assert row["objective"]["kind"] in ("target_string", "activation", "behavior")
        assert row["placement"] in ("whole", "suffix") and isinstance(row["settings"], dict)
        if row["placement"] == "suffix":
            assert row["parent"] and row["text"].startswith(row["parent"].rstrip()[:10])
            assert 0 < row["suffix_start"] <= len(row["text"])


def test_suffix_objective_optimizes_only_the_suffix(tiny) -> None:
    rng = random.Random(0)
    base, _ = draw_objective(tiny, rng, kinds=("activation",))
    prefix = tiny.tokenizer("You are a pirate.", add_special_tokens=False)["input_ids"]
    wrapped = SuffixObjective(base, prefix)
    suffix = torch.tensor([5, 6, 7])
    full = torch.cat([torch.tensor(prefix), suffix])
    torch.testing.assert_close(wrapped.losses(suffix.unsqueeze(0)), base.losses(full.unsqueeze(0)))
    loss, grad = wrapped.loss_and_grad(suffix)
    assert grad.shape[0] == 3 and loss == pytest.approx(float(base.losses(full.unsqueeze(0))[0]), abs=1e-4)


def test_crossover_keeps_sentences() -> None:
    a, b = "One. Two. Three.", "Alpha! Beta?"
    assert sentences(a) == ["One.", "Two.", "Three."]
    child = crossover(a, b, random.Random(0))
    parts = sentences(child)
    assert len(parts) == 3 and all(p in sentences(a) + sentences(b) for p in parts)
    with pytest.raises(ValueError, match="elite"):
        GeneticConfig(population=4, elite=4)


def test_generate_writes_drops_and_resumes(tiny, tmp_path, monkeypatch) -> None:
    calls: list[int] = []

    def fake(lm, family, rng, seed):
        calls.append(seed)
        return [{"text": "Explain it like I am five years old.", "family": family},  # a corpus item: dropped
                {"text": f"odd text number {seed % 3}", "family": family},
                {"text": f"ODD  text number {seed % 3}", "family": family}]  # a repeat up to case and spacing

    monkeypatch.setattr(generate, "run_family", fake)
    out = tmp_path / "beast.jsonl"
    config = generate.GenerateConfig(out=str(out), n_rows=100, minutes=5, max_runs=5, seed=1)
    rows = generate.generate(tiny, "beast", config)
    assert sorted(r["text"] for r in rows) == ["odd text number 0", "odd text number 1", "odd text number 2"]
    assert len(calls) == 5  # every run done (the last two kept nothing)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["run"] for r in lines} == set(range(5))
    generate.generate(tiny, "beast", config)  # resume: nothing left to run
    assert len(calls) == 5
    with pytest.raises(ValueError, match="family"):
        generate.generate(tiny, "nope", config)  # type: ignore[arg-type]
    assert families.FAMILIES == ("beast", "autodan", "flrt", "fluent", "natural")
