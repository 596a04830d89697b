"""PEZ-style relaxation on the tiny model: projection = nearest neighbour, valid ids, embedding loss matches."""

from __future__ import annotations

import pytest
import torch
from test_beam import objective  # noqa: F401  (module fixture: shift objective on the tiny model)

from realize.attacks.gcg import GCGConfig
from realize.attacks.relaxed import RelaxedConfig, project, run, shift_loss_from_embeds
from realize.attacks.sampling import allowed_token_mask
from realize.data.models import LoadedModel


def test_project_is_the_nearest_allowed_token() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(50, 8, generator=generator)
    allowed = torch.rand(50, generator=generator) > 0.3
    embeds = torch.randn(6, 8, generator=generator)
    ids = project(embeds, weight, allowed)
    dist = torch.cdist(embeds, weight).masked_fill(~allowed.unsqueeze(0), float("inf"))
    assert ids.tolist() == dist.argmin(dim=1).tolist()
    assert allowed[ids].all()
    assert project(weight[[3, 7]], weight, torch.ones(50, dtype=torch.bool)).tolist() == [3, 7]


def test_embedding_loss_equals_the_objective_on_token_embeddings(tiny: LoadedModel, objective) -> None:  # noqa: F811
    ids = torch.tensor([[5, 77, 130, 201]])
    loss_fn = shift_loss_from_embeds(objective)
    embeds = tiny.model.get_input_embeddings()(ids)
    assert float(loss_fn(embeds)) == pytest.approx(float(objective.losses(ids)[0]), abs=1e-4)


def test_relaxed_returns_valid_ids_seeded_and_never_worse_than_its_start(tiny: LoadedModel, objective) -> None:  # noqa: F811
    vocab = tiny.model.get_input_embeddings().weight.shape[0]
    allowed = allowed_token_mask(tiny.tokenizer, ascii_only=True, vocab_size=vocab)
    config = RelaxedConfig(length=5, steps=15, polish_steps=2, polish=GCGConfig(width=8, top_k=8), seed=2)
    result = run(objective, tiny, objective.layout, config)
    assert result.attack == "relaxed" and len(result.best_ids) >= 1
    assert all(allowed[t] for t in result.best_ids)
    assert result.best_loss == pytest.approx(float(objective.losses(torch.tensor([result.best_ids]))[0]), abs=1e-4)
    first = result.trajectory[0]
    assert result.best_loss <= first.loss + 1e-6
    again = run(objective, tiny, objective.layout, config)
    assert again.best_ids == result.best_ids


def test_relaxed_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="lr"):
        RelaxedConfig(lr=0.0)
    with pytest.raises(ValueError, match="steps"):
        RelaxedConfig(steps=0)
