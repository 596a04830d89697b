"""Activation-shift objective against oracles built from `data.shift` and a full forward with hidden states."""

from __future__ import annotations

import pytest
import torch

from realize.attacks.objectives import (
    ActivationObjectiveConfig, ActivationShiftObjective, activation_loss, activation_objective, estimate_generic,
)
from realize.data.chat import chat_layout, encode
from realize.data.errors import UserInputError
from realize.data.shift import generic_direction, prompt_shifts, shift_metrics

CONTEXTS = ["What is the capital of France?", "How do I bake bread?", "Write a poem."]
LAYER = 2


def _setup(tiny, placement="prefix", **cfg):
    tok, model = tiny.tokenizer, tiny.model
    layout = chat_layout(tok, placement)
    ctxs = [encode(tok, c) for c in CONTEXTS]
    g = generic_direction(model, layout, [encode(tok, "I have a question.")], ctxs, LAYER, pad_id=tok.pad_token_id)
    target = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    config = ActivationObjectiveConfig(**cfg)
    return ActivationShiftObjective(model, tok, layout, target, LAYER, ctxs, generic=g, config=config), layout, ctxs


def _oracle(tiny, layout, ctxs, prompt, target, g, beta=0.1, gamma=1.0, consistency=0.0):
    deltas = prompt_shifts(tiny.model, layout, [prompt], ctxs, LAYER, pad_id=tiny.tokenizer.pad_token_id)[0]
    m = shift_metrics(deltas, target, g)
    loss = 1 - m.cos + beta * (m.norm_ratio - 1) ** 2 + gamma * (1 - m.specific_cos)
    return loss + consistency * (1 - m.per_position_cos), m


@pytest.mark.parametrize("placement", ["prefix", "suffix", "system"])
@pytest.mark.parametrize("kv_reuse", [True, False])
def test_losses_match_data_shift_oracle(tiny, placement, kv_reuse):
    obj, layout, ctxs = _setup(tiny, placement, consistency=0.5, kv_reuse=kv_reuse, batch_size=2)
    prompts = torch.randint(10, 300, (5, 4), generator=torch.Generator().manual_seed(0))
    losses = obj.losses(prompts)
    assert losses.shape == (5,)
    for b in range(5):
        expected, _ = _oracle(tiny, layout, ctxs, prompts[b].tolist(), obj.target, obj.generic, consistency=0.5)
        assert losses[b].item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("placement", ["prefix", "suffix"])
def test_metrics_match_shift_metrics(tiny, placement):
    obj, layout, ctxs = _setup(tiny, placement)
    prompt = torch.tensor(encode(tiny.tokenizer, "Explain it like I am five"))
    _, m = _oracle(tiny, layout, ctxs, prompt.tolist(), obj.target, obj.generic)
    got = obj.metrics(prompt)
    assert got["cos"] == pytest.approx(m.cos, abs=1e-5)
    assert got["specific_cos"] == pytest.approx(m.specific_cos, abs=1e-5)
    assert got["per_position_cos"] == pytest.approx(m.per_position_cos, abs=1e-5)
    assert got["norm_ratio"] == pytest.approx(m.norm_ratio, abs=1e-5)
    full = obj.shift_metrics(prompt)
    assert full.per_context_cos == pytest.approx(m.per_context_cos, abs=1e-5)


def test_kv_reuse_equals_no_reuse(tiny):
    a, _, _ = _setup(tiny, "prefix", kv_reuse=True)
    b, _, _ = _setup(tiny, "prefix", kv_reuse=False)
    prompts = torch.randint(10, 300, (6, 5), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(a.losses(prompts), b.losses(prompts), atol=1e-5)


@pytest.mark.parametrize("placement", ["prefix", "suffix"])
def test_gradient_matches_full_embedding_autograd(tiny, placement):
    """The one-hot gradient through the early-exit KV-reuse path equals autograd through full forwards
    (inputs_embeds, output_hidden_states) of every placed input."""
    obj, layout, ctxs = _setup(tiny, placement, consistency=0.3)
    model = tiny.model
    prompt = torch.tensor(encode(tiny.tokenizer, "Explain it like"))
    loss, grad = obj.loss_and_grad(prompt)
    weight = model.get_input_embeddings().weight
    one_hot = torch.nn.functional.one_hot(prompt, weight.shape[0]).float().requires_grad_(True)
    means, cos_sum, n = [], 0.0, 0
    for k, ctx in enumerate(ctxs):
        placed = layout.place(prompt.tolist(), ctx)
        embeds = weight[list(placed.ids)].clone()
        embeds[list(placed.prompt)] = one_hot @ weight
        hidden = model(inputs_embeds=embeds.unsqueeze(0), output_hidden_states=True).hidden_states[LAYER + 1][0]
        delta = hidden[list(placed.aligned)] - obj.base[k]
        means.append(delta.mean(dim=0))
        cos_sum = cos_sum + torch.nn.functional.cosine_similarity(delta, obj.target.unsqueeze(0), dim=-1).sum()
        n += delta.shape[0]
    mean = torch.stack(means).mean(dim=0, keepdim=True)
    ref = activation_loss(mean, (cos_sum / n).reshape(1), obj.target, obj.generic, obj.config)[0]
    ref.backward()
    assert loss == pytest.approx(ref.item(), abs=1e-4)
    assert torch.allclose(grad, one_hot.grad, atol=1e-4, rtol=1e-3)
    assert grad.abs().sum() > 0


def test_loss_decreases_along_negative_gradient_choice(tiny):
    """First-order check: among single swaps at one position, the token the gradient ranks best beats the one
    it ranks worst on average over positions."""
    obj, _, _ = _setup(tiny, "prefix")
    prompt = torch.tensor(encode(tiny.tokenizer, "Explain it like I am"))
    loss, grad = obj.loss_and_grad(prompt)
    best, worst = prompt.repeat(prompt.shape[0], 1), prompt.repeat(prompt.shape[0], 1)
    for i in range(prompt.shape[0]):
        best[i, i] = int(grad[i, 3:].argmin()) + 3
        worst[i, i] = int(grad[i, 3:].argmax()) + 3
    assert obj.losses(best).mean() < obj.losses(worst).mean()


def test_oom_halves_batch_and_keeps_results(tiny, monkeypatch):
    obj, _, _ = _setup(tiny, "prefix", batch_size=4)
    prompts = torch.randint(10, 300, (6, 3), generator=torch.Generator().manual_seed(3))
    expected = obj.losses(prompts)
    real = obj._reduce
    calls = {"n": 0}

    def flaky(p, e):
        calls["n"] += 1
        if p is not None and p.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(p, e)

    monkeypatch.setattr(obj, "_reduce", flaky)
    assert torch.allclose(obj.losses(prompts), expected, atol=1e-6)
    assert obj._batch == 2 and calls["n"] == 4  # one failed try at 4, then 2 + 2 + 2


def test_model_untouched(tiny):
    model = tiny.model
    ids = torch.tensor([encode(tiny.tokenizer, "Write a poem about bread.")])
    before = model(ids).logits
    hooks = {n: dict(m._forward_hooks) for n, m in model.named_modules()}  # transformers may keep its own
    obj, _, _ = _setup(tiny, "prefix")
    obj.losses(torch.randint(10, 300, (3, 4)))
    obj.loss_and_grad(torch.randint(10, 300, (4,)))
    assert {n: dict(m._forward_hooks) for n, m in model.named_modules()} == hooks
    assert not any(p.requires_grad for p in model.parameters())
    assert torch.equal(model(ids).logits, before)


def test_factory_and_generic_estimate(tiny):
    layout = chat_layout(tiny.tokenizer, "prefix")
    g = estimate_generic(tiny, layout, LAYER, CONTEXTS, ["I have a question.", "Quick question."])
    tok = tiny.tokenizer
    ref = generic_direction(tiny.model, layout, [encode(tok, "I have a question."), encode(tok, "Quick question.")],
                            [encode(tok, c) for c in CONTEXTS], LAYER, pad_id=tok.pad_token_id)
    assert torch.allclose(g, ref, atol=1e-6)
    obj = activation_objective(tiny, torch.randn(32), LAYER, CONTEXTS, generic=g)
    assert set(obj.metrics(torch.tensor([40, 41]))) >= {"cos", "specific_cos", "per_position_cos", "norm_ratio"}
    plain = activation_objective(tiny, torch.randn(32), LAYER, CONTEXTS)
    assert "specific_cos" not in plain.metrics(torch.tensor([40, 41]))


def test_bad_input(tiny):
    with pytest.raises(UserInputError, match="target"):
        activation_objective(tiny, torch.randn(31), LAYER, CONTEXTS)
    with pytest.raises(UserInputError, match="layer"):
        activation_objective(tiny, torch.randn(32), 4, CONTEXTS)
    with pytest.raises(UserInputError, match="context"):
        activation_objective(tiny, torch.randn(32), LAYER, [])
    obj = activation_objective(tiny, torch.randn(32), LAYER, CONTEXTS)
    with pytest.raises(ValueError, match="L >= 1"):
        obj.losses(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        obj.losses(torch.tensor([[10**6]]))
    for field, value in (("beta", -1.0), ("batch_size", 0), ("gamma", float("nan"))):
        with pytest.raises(ValueError, match=field):
            ActivationObjectiveConfig(**{field: value})


@pytest.mark.slow
def test_smollm2_packed_kv_reuse_matches_reference():
    """On the real model (sdpa attention, GQA), the packed KV-reuse path equals full early-exit forwards."""
    from realize.data.models import load_model

    lm = load_model()
    ctxs = ["What is the capital of France?", "How do I reverse a list in Python?", "Tell me a joke."]
    gen = torch.Generator().manual_seed(0)
    target, g = torch.randn(lm.hidden_size, generator=gen), torch.randn(lm.hidden_size, generator=gen)
    prompts = torch.randint(1000, 20000, (3, 6), generator=gen)
    fast = activation_objective(lm, target, 12, ctxs, generic=g)
    slow = activation_objective(lm, target, 12, ctxs, generic=g, config=ActivationObjectiveConfig(kv_reuse=False))
    assert torch.allclose(fast.losses(prompts), slow.losses(prompts), atol=1e-4)


def test_suffix_positions_before_the_prompt_do_not_shift(tiny):
    """Under the suffix placement the context's own positions precede the prompt: their delta is exactly 0 (computed,
    it would be float noise whose cosine with the target is random, and two correct forwards would disagree on the
    per-position cosine), while the positions after it carry the real shift."""
    _, layout, ctxs = _setup(tiny, "suffix")
    prompt = encode(tiny.tokenizer, "Explain it like I am five")
    deltas = prompt_shifts(tiny.model, layout, [prompt], ctxs, LAYER, pad_id=tiny.tokenizer.pad_token_id)[0]
    for context, delta in zip(ctxs, deltas, strict=True):
        norms = delta.norm(dim=-1)
        assert (norms[: len(context)] == 0).all() and norms[len(context):].min() > 1e-6
