"""Fluency CE (oracle: a plain forward with labels) and the fluent Pareto search on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from test_beam import objective  # noqa: F401  (module fixture: shift objective on the tiny model)

from realize.attacks.base import FrontierPoint
from realize.attacks.beam import BeamConfig
from realize.attacks.fluency import encode_head, lm_head_ids, prompt_ce, prompt_ce_and_grad
from realize.attacks.fluent import FluentConfig, lm_restricted, pareto_front, run
from realize.data.chat import chat_layout, encode
from realize.data.models import LoadedModel

PROMPTS = ["You are a pirate.", "Explain it like I am five.", "zq xv kk"]


def _prompts(tiny: LoadedModel) -> torch.Tensor:
    rows = [encode(tiny.tokenizer, p) for p in PROMPTS]
    n = min(len(r) for r in rows)
    return torch.tensor([r[:n] for r in rows])


@pytest.mark.parametrize("placement", ["prefix", "system"])
def test_prompt_ce_equals_full_forward_with_labels(tiny: LoadedModel, placement: str) -> None:
    layout = chat_layout(tiny.tokenizer, placement)
    head_ids = lm_head_ids(layout)
    prompts = _prompts(tiny)
    ce = prompt_ce(tiny.model, encode_head(tiny.model, head_ids), prompts, batch_size=2)
    for row, value in zip(prompts, ce, strict=True):
        ids = torch.tensor([list(head_ids) + row.tolist()])
        labels = ids.clone()
        labels[0, : len(head_ids)] = -100
        with torch.no_grad():
            oracle = tiny.model(input_ids=ids, labels=labels).loss
        assert float(value) == pytest.approx(float(oracle), abs=1e-4)


def test_prompt_ce_gradient_is_exact_for_the_last_token(tiny: LoadedModel) -> None:
    """The last token feeds no later prediction, so CE is linear in its one-hot: the gradient difference between
    two tokens equals the exact CE change of swapping them."""
    head = encode_head(tiny.model, lm_head_ids(chat_layout(tiny.tokenizer)))
    prompt = _prompts(tiny)[0]
    ce, grad, next_lp = prompt_ce_and_grad(tiny.model, head, prompt)
    assert ce == pytest.approx(float(prompt_ce(tiny.model, head, prompt.unsqueeze(0))[0]), abs=1e-5)
    assert next_lp.shape == grad.shape == (prompt.shape[0], tiny.model.config.vocab_size)
    swapped = prompt.clone()
    swapped[-1] = (int(prompt[-1]) + 17) % tiny.model.config.vocab_size
    exact = float(prompt_ce(tiny.model, head, swapped.unsqueeze(0))[0]) - ce
    assert float(grad[-1, swapped[-1]] - grad[-1, prompt[-1]]) == pytest.approx(exact, abs=1e-5)


def test_pareto_front_keeps_exactly_the_non_dominated_points() -> None:
    costs = torch.tensor([[1.0, 5.0], [2.0, 2.0], [3.0, 3.0], [4.0, 1.0], [2.0, 2.0], [0.5, 9.0]])
    front = pareto_front(costs).tolist()
    assert sorted(front) in ([0, 1, 3, 5], [0, 3, 4, 5])
    assert [costs[i, 0].item() for i in front] == sorted(costs[i, 0].item() for i in front)


def test_lm_restricted_keeps_gradient_only_on_lm_top_tokens() -> None:
    grad = torch.tensor([[0.5, -1.0, -2.0, 3.0]])
    logprobs = torch.log_softmax(torch.tensor([[4.0, 3.0, -5.0, 2.0]]), dim=-1)
    allowed = torch.tensor([True, True, True, False])
    out = lm_restricted(grad, logprobs, allowed, 2)
    assert out[0, :2].tolist() == [0.5, -1.0] and math.isinf(out[0, 2]) and math.isinf(out[0, 3])


def test_fluent_frontier_is_pareto_and_seeded(tiny: LoadedModel, objective) -> None:  # noqa: F811
    config = FluentConfig(
        lambdas=(0.0, 0.1, 1.0), steps=4, width=8, top_k=8, lm_top_k=16, restart_every=2, seed=3,
        init_beam=BeamConfig(beam_width=2, samples_per_beam=4, length=4, seed=3),
    )
    result = run(objective, tiny, objective.layout, config)
    frontier = result.frontier
    assert result.attack == "fluent" and frontier
    for p in frontier:
        assert isinstance(p, FrontierPoint) and p.prompt and p.ids and p.rank is None
        assert p.fluency_weight in config.lambdas
        assert p.perplexity == pytest.approx(math.exp(p.ce))
        for q in frontier:
            dominated = q.cos >= p.cos and q.perplexity <= p.perplexity and (
                q.cos > p.cos or q.perplexity < p.perplexity)
            assert not dominated
    assert result.best_ids in {p.ids for p in frontier}
    again = run(objective, tiny, objective.layout, config)
    assert [p.ids for p in again.frontier] == [p.ids for p in frontier]


def test_fluent_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="lambdas"):
        FluentConfig(lambdas=(-1.0,))
    with pytest.raises(ValueError, match="lm_top_k"):
        FluentConfig(top_k=64, lm_top_k=8)
