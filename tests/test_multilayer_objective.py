"""The activation objective over several layers (one steer at many blocks) against the single-layer objectives and
the reference path without KV reuse."""

from __future__ import annotations

import pytest
import torch

from realize.attacks.objectives import ActivationObjectiveConfig, ActivationShiftObjective, activation_objective
from realize.data.activations import decoder_layers
from realize.data.chat import chat_layout, encode
from realize.data.errors import UserInputError
from realize.data.shift import prompt_shifts, shift_metrics

CONTEXTS = ["What is the capital of France?", "How do I bake bread?", "Write a poem."]
LAYERS = (1, 3)


def _objectives(tiny, placement="prefix", **cfg):
    """(multi-layer objective, {layer: single-layer objective with the same target and g})."""
    tok, model = tiny.tokenizer, tiny.model
    layout = chat_layout(tok, placement)
    ctxs = [encode(tok, c) for c in CONTEXTS]
    gen = torch.Generator().manual_seed(5)
    targets = {i: torch.randn(32, generator=gen) * (i + 1) for i in LAYERS}
    generics = {i: torch.randn(32, generator=gen) for i in LAYERS}
    config = ActivationObjectiveConfig(**cfg)
    multi = ActivationShiftObjective(model, tok, layout, targets, None, ctxs, generic=generics, config=config)
    singles = {i: ActivationShiftObjective(model, tok, layout, targets[i], i, ctxs, generic=generics[i],
                                           config=config) for i in LAYERS}
    return multi, singles, layout, ctxs


@pytest.mark.parametrize("placement", ["prefix", "suffix", "system"])
def test_multi_layer_kv_reuse_equals_reference(tiny, placement):
    fast, _, _, _ = _objectives(tiny, placement, consistency=0.3, batch_size=2)
    slow, _, _, _ = _objectives(tiny, placement, consistency=0.3, kv_reuse=False)
    prompts = torch.randint(10, 300, (5, 4), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(fast.losses(prompts), slow.losses(prompts), atol=1e-5)
    a, b = fast.per_context_shifts_by_layer(prompts), slow.per_context_shifts_by_layer(prompts)
    assert set(a) == set(LAYERS)
    for i in LAYERS:
        assert a[i].shape == (5, len(CONTEXTS), 32)
        assert torch.allclose(a[i], b[i], atol=1e-5)


@pytest.mark.parametrize("placement", ["prefix", "suffix"])
def test_multi_layer_loss_is_the_sum_of_single_layer_losses(tiny, placement):
    multi, singles, layout, ctxs = _objectives(tiny, placement, consistency=0.2)
    prompts = torch.randint(10, 300, (4, 3), generator=torch.Generator().manual_seed(1))
    expected = sum(obj.losses(prompts) for obj in singles.values())
    assert torch.allclose(multi.losses(prompts), expected, atol=1e-5)
    # and each layer's shift is the data.shift oracle's at that layer
    shifts = multi.per_context_shifts_by_layer(prompts)
    for i in LAYERS:
        oracle = prompt_shifts(tiny.model, layout, [prompts[0].tolist()], ctxs, i, pad_id=tiny.tokenizer.pad_token_id)[0]
        assert torch.allclose(shifts[i][0], torch.stack([d.mean(dim=0) for d in oracle]), atol=1e-5)


def test_multi_layer_gradient_is_the_sum_of_single_layer_gradients(tiny):
    multi, singles, _, _ = _objectives(tiny, "prefix", consistency=0.2)
    prompt = torch.tensor(encode(tiny.tokenizer, "Explain it like"))
    loss, grad = multi.loss_and_grad(prompt)
    parts = [obj.loss_and_grad(prompt) for obj in singles.values()]
    assert loss == pytest.approx(sum(p[0] for p in parts), abs=1e-5)
    assert torch.allclose(grad, sum(p[1] for p in parts), atol=1e-5)
    assert grad.abs().sum() > 0


def test_multi_layer_metrics_per_layer_and_totals(tiny):
    multi, singles, layout, ctxs = _objectives(tiny, "prefix")
    prompt = torch.tensor(encode(tiny.tokenizer, "Explain it like I am five"))
    got = multi.metrics(prompt)
    for name in ("cos", "specific_cos", "per_position_cos", "norm_ratio"):
        per_layer = [singles[i].metrics(prompt)[name] for i in LAYERS]
        for i, value in zip(LAYERS, per_layer, strict=True):
            assert got[f"{name}@{i}"] == pytest.approx(value, abs=1e-5)
        assert got[name] == pytest.approx(sum(per_layer) / len(per_layer), abs=1e-5)
    assert got["loss"] == pytest.approx(float(multi.losses(prompt.unsqueeze(0))[0]), abs=1e-6)
    by_layer = multi.shift_metrics_by_layer(prompt)
    for i in LAYERS:
        deltas = prompt_shifts(tiny.model, layout, [prompt.tolist()], ctxs, i, pad_id=tiny.tokenizer.pad_token_id)[0]
        ref = shift_metrics(deltas, multi.targets[i], multi.generics[i])
        assert by_layer[i].per_context_cos == pytest.approx(ref.per_context_cos, abs=1e-5)
        assert by_layer[i].specific_cos == pytest.approx(ref.specific_cos, abs=1e-5)


def test_single_layer_keeps_its_api_and_mapping_of_one_equals_it(tiny):
    multi, singles, _, ctxs = _objectives(tiny, "prefix")
    single = singles[3]
    assert single.layers == (3,) and single.layer == 3
    assert torch.equal(single.target, single.targets[3]) and single.base is single.bases[3]
    assert "specific_cos@3" not in single.metrics(torch.tensor([40, 41]))
    as_map = ActivationShiftObjective(tiny.model, tiny.tokenizer, single.layout, {3: single.target}, None, ctxs,
                                      generic={3: single.generic})
    prompts = torch.randint(10, 300, (3, 3), generator=torch.Generator().manual_seed(2))
    assert torch.equal(as_map.losses(prompts), single.losses(prompts))
    for what in ("target", "generic", "base"):
        with pytest.raises(ValueError, match=what):
            getattr(multi, what)
    with pytest.raises(ValueError, match="per_context_shifts"):
        multi.per_context_shifts(prompts)


def test_multi_layer_forward_stops_after_the_deepest_layer(tiny):
    blocks = decoder_layers(tiny.model)
    calls: list[int] = []
    handles = [b.register_forward_hook(lambda *_a, i=i: calls.append(i)) for i, b in enumerate(blocks)]
    try:
        tok = tiny.tokenizer
        targets = {0: torch.randn(32), 2: torch.randn(32)}
        obj = ActivationShiftObjective(tiny.model, tok, chat_layout(tok), targets, None,
                                       [encode(tok, c) for c in CONTEXTS])
        calls.clear()
        obj.losses(torch.randint(10, 300, (2, 3)))
        obj.loss_and_grad(torch.randint(10, 300, (3,)))
    finally:
        for h in handles:
            h.remove()
    assert calls and max(calls) == 2


def test_multi_layer_bad_input(tiny):
    tok = tiny.tokenizer
    layout, ctxs = chat_layout(tok), [encode(tok, c) for c in CONTEXTS]
    t = {1: torch.randn(32), 3: torch.randn(32)}
    with pytest.raises(UserInputError, match="generic"):
        ActivationShiftObjective(tiny.model, tok, layout, t, None, ctxs, generic={1: torch.randn(32)})
    with pytest.raises(UserInputError, match="layer"):
        ActivationShiftObjective(tiny.model, tok, layout, t, 3, ctxs)
    with pytest.raises(UserInputError, match="layer"):
        ActivationShiftObjective(tiny.model, tok, layout, {7: torch.randn(32)}, None, ctxs)
    with pytest.raises(UserInputError, match="target"):
        ActivationShiftObjective(tiny.model, tok, layout, {1: torch.randn(31)}, None, ctxs)
    with pytest.raises(UserInputError, match="target"):
        ActivationShiftObjective(tiny.model, tok, layout, {}, None, ctxs)
    obj = activation_objective(tiny, t, None, CONTEXTS, generic={1: torch.randn(32), 3: torch.randn(32)})
    assert obj.layers == (1, 3)


def test_generics_by_layer_equal_single_layer_estimates(tiny):
    from realize.attacks.objectives import estimate_generic, estimate_generics

    layout = chat_layout(tiny.tokenizer)
    prompts = ["I have a question.", "Quick question.", "Hello there, friend."]
    both = estimate_generics(tiny, layout, LAYERS, CONTEXTS, prompts)
    for i in LAYERS:
        assert torch.allclose(both[i], estimate_generic(tiny, layout, i, CONTEXTS, prompts), atol=1e-6)


@pytest.mark.slow
def test_smollm2_multi_layer_kv_reuse_matches_reference():
    """On the real model (sdpa attention, GQA), the packed multi-layer path equals full early-exit forwards."""
    from realize.data.models import load_model

    lm = load_model()
    ctxs = ["What is the capital of France?", "How do I reverse a list in Python?", "Tell me a joke."]
    gen = torch.Generator().manual_seed(0)
    targets = {i: torch.randn(lm.hidden_size, generator=gen) for i in (4, 8, 12)}
    generics = {i: torch.randn(lm.hidden_size, generator=gen) for i in (4, 8, 12)}
    prompts = torch.randint(1000, 20000, (3, 6), generator=gen)
    fast = activation_objective(lm, targets, None, ctxs, generic=generics)
    slow = activation_objective(lm, targets, None, ctxs, generic=generics,
                                config=ActivationObjectiveConfig(kv_reuse=False))
    assert torch.allclose(fast.losses(prompts), slow.losses(prompts), atol=1e-4)
