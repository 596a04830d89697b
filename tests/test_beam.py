"""LM-guided beam search on the tiny model: allowed tokens only, beats random prompts, seeded."""

from __future__ import annotations

import pytest
import torch

from realize.attacks.beam import BeamConfig, nucleus_sample, run, stop_token_ids
from realize.attacks.objectives import activation_objective
from realize.attacks.sampling import allowed_token_mask, random_candidates
from realize.data.chat import chat_layout, encode
from realize.data.models import LoadedModel
from realize.data.shift import mean_shift, prompt_shifts

CONTEXTS = ["What is the capital of France?", "How do I bake bread at home?", "Write a short poem about the sea."]
LAYER = 2


@pytest.fixture(scope="module")
def objective(tiny: LoadedModel):
    layout = chat_layout(tiny.tokenizer)
    ctx = [encode(tiny.tokenizer, c) for c in CONTEXTS]
    source = encode(tiny.tokenizer, "Explain it like I am five years old.")
    target = mean_shift(prompt_shifts(tiny.model, layout, [source], ctx, LAYER)[0])
    return activation_objective(tiny, target, LAYER, CONTEXTS)


def _allowed(tiny: LoadedModel) -> torch.Tensor:
    vocab = tiny.model.get_input_embeddings().weight.shape[0]
    return allowed_token_mask(tiny.tokenizer, ascii_only=True, vocab_size=vocab)


def test_beam_uses_allowed_tokens_and_beats_random_prompts(tiny: LoadedModel, objective) -> None:
    config = BeamConfig(beam_width=4, samples_per_beam=8, length=6, seed=1)
    result = run(objective, tiny, objective.layout, config)
    allowed = _allowed(tiny)
    assert result.attack == "beam" and 1 <= len(result.best_ids) <= 6
    for step in result.trajectory:
        assert all(allowed[t] for t in step.prompt_ids)
    assert all(allowed[t] for t in result.best_ids)
    assert result.best_loss == pytest.approx(float(objective.losses(torch.tensor([result.best_ids]))[0]), abs=1e-4)
    assert [s.best_loss for s in result.trajectory] == sorted((s.best_loss for s in result.trajectory), reverse=True)
    generator = torch.Generator().manual_seed(0)
    random = random_candidates(64, len(result.best_ids), mask=allowed, generator=generator)
    assert result.best_loss < float(objective.losses(random).median())


def test_beam_is_deterministic_with_seed(tiny: LoadedModel, objective) -> None:
    config = BeamConfig(beam_width=2, samples_per_beam=4, length=3, seed=7)
    first = run(objective, tiny, objective.layout, config)
    second = run(objective, tiny, objective.layout, config)
    assert first.best_ids == second.best_ids
    assert [s.prompt_ids for s in first.trajectory] == [s.prompt_ids for s in second.trajectory]


def test_nucleus_sample_is_distinct_allowed_and_inside_the_nucleus() -> None:
    logprobs = torch.log_softmax(torch.tensor([5.0, 4.0, 3.0, 0.0, -1.0, -9.0]), dim=0)
    allowed = torch.tensor([False, True, True, True, True, True])
    generator = torch.Generator().manual_seed(0)
    ids = nucleus_sample(logprobs, allowed, 10, top_p=0.9, temperature=1.0, generator=generator)
    assert len(set(ids.tolist())) == ids.numel()
    assert set(ids.tolist()) <= {1, 2}  # token 0 is masked; tokens 1 and 2 hold > 90% of the allowed mass
    one = nucleus_sample(logprobs, allowed, 3, top_p=1e-6, temperature=1.0, generator=generator)
    assert one.tolist() == [1]


def test_stop_tokens_include_eos(tiny: LoadedModel) -> None:
    assert tiny.tokenizer.eos_token_id in stop_token_ids(tiny.tokenizer)


@pytest.mark.parametrize("field,value", [("beam_width", 0), ("length", 0), ("top_p", 0.0), ("temperature", 0.0)])
def test_config_rejects_bad_values(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        BeamConfig(**{field: value})
