"""The behavior objective against a plain reference: full forwards of the prompted input + the steered text."""

from __future__ import annotations

import pytest
import torch

from realize.attacks.behavior_objective import BehaviorObjective
from realize.data.chat import chat_layout, encode
from realize.data.steered import forced_logprobs, steered_contexts

CONTEXTS = ["What is the capital of France?", "How do I bake bread at home?", "Write a short poem."]


@pytest.fixture(scope="module")
def steered(tiny):
    torch.manual_seed(0)
    layout = chat_layout(tiny.tokenizer, "prefix")
    return layout, steered_contexts(tiny, layout, {1: 3.0 * torch.randn(32)}, 1.0, CONTEXTS, 6)


def _reference(tiny, layout, contexts, prompt):
    total, n = 0.0, 0
    for c in contexts:
        placed = layout.place(prompt, c.context_ids).ids
        logp = forced_logprobs(tiny, [placed], [c.continuation])[0]
        total += float((c.steered.exp() * (c.steered - logp)).sum())
        n += len(c.continuation)
    return total / n


@pytest.mark.parametrize("placement", ["prefix", "suffix", "system"])
def test_matches_full_forward_reference(tiny, placement):
    torch.manual_seed(0)
    layout = chat_layout(tiny.tokenizer, placement)
    contexts = steered_contexts(tiny, layout, {1: 3.0 * torch.randn(32)}, 1.0, CONTEXTS, 5)
    objective = BehaviorObjective(tiny.model, tiny.tokenizer, layout, contexts, batch_size=2)
    prompts = [encode(tiny.tokenizer, p)[:4] for p in ("You are a pirate.", "Explain it like I am five.",
                                                         "Please answer briefly")]
    losses = objective.losses(torch.tensor(prompts))
    for prompt, loss in zip(prompts, losses.tolist(), strict=True):
        assert loss == pytest.approx(_reference(tiny, layout, contexts, prompt), rel=1e-4, abs=1e-6)


def test_gradient_matches_finite_difference_of_one_hot(tiny, steered):
    layout, contexts = steered
    objective = BehaviorObjective(tiny.model, tiny.tokenizer, layout, contexts)
    prompt = torch.tensor(encode(tiny.tokenizer, "You are a pirate.")[:4])
    loss, grad = objective.loss_and_grad(prompt)
    assert loss == pytest.approx(float(objective.losses(prompt.unsqueeze(0))[0]), rel=1e-4)
    assert grad.shape == (4, objective.vocab_size) and torch.isfinite(grad).all()
    # a swap the gradient says lowers the loss lowers it more often than a swap it says raises it (linearization)
    pos = 1
    better, worse = int(grad[pos].argmin()), int(grad[pos].argmax())
    low, high = prompt.clone(), prompt.clone()
    low[pos], high[pos] = better, worse
    assert float(objective.losses(low.unsqueeze(0))[0]) < float(objective.losses(high.unsqueeze(0))[0])


def test_no_prompt_effect_is_the_steering_effect(tiny, steered):
    """Steered vs base KL along y is what an (impossible) empty prompt would leave: the loss scale."""
    layout, contexts = steered
    effect = sum(float(c.effect.sum()) for c in contexts) / sum(len(c.continuation) for c in contexts)
    assert effect > 0
    metrics = BehaviorObjective(tiny.model, tiny.tokenizer, layout, contexts).metrics(
        torch.tensor(encode(tiny.tokenizer, "Hi")))
    assert metrics["recovery"] == pytest.approx(1 - metrics["kl"] / effect, rel=1e-5)


def test_evaluate_agrees_with_losses_and_reference_token_logprobs(tiny, steered):
    layout, contexts = steered
    objective = BehaviorObjective(tiny.model, tiny.tokenizer, layout, contexts, batch_size=1)
    prompts = torch.tensor([encode(tiny.tokenizer, p)[:3] for p in ("You are a pirate.", "Please answer briefly")])
    kl, tokens = objective.evaluate(prompts)
    assert torch.allclose(kl.sum(1) / objective.n_scored, objective.losses(prompts), rtol=1e-4)
    for k, c in enumerate(contexts):
        ref = forced_logprobs(tiny, [layout.place(prompts[1].tolist(), c.context_ids).ids], [c.continuation])[0]
        own = ref.gather(-1, torch.tensor(c.continuation).unsqueeze(1)).squeeze(1)
        assert torch.allclose(tokens[k][1], own, atol=1e-4)
