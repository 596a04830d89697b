"""MELBO and CAA on the tiny model."""

from __future__ import annotations

import pytest
import torch

from realize.data.activations import block_output
from realize.data.generation import chat_ids
from realize.vector_training import CaaConfig, MelboConfig, train_caa, train_melbo


def test_melbo_vectors_orthogonal_fixed_norm_and_seeded(tiny):
    config = MelboConfig(source_layer=0, target_layer=3, n_vectors=3, radius=2.0, steps=5, lr=0.05, show_progress=False)
    vectors = train_melbo(tiny, ["What is the capital of France?", "Hi"], config)
    stack = torch.stack([v.vector for v in vectors])
    torch.testing.assert_close(stack.norm(dim=1), torch.full((3,), 2.0))
    gram = stack @ stack.T
    assert (gram - torch.diag(torch.diag(gram))).abs().max() < 1e-3
    again = train_melbo(tiny, ["What is the capital of France?", "Hi"], config)
    assert torch.equal(again[0].vector, vectors[0].vector)
    assert vectors[0].method == "melbo" and vectors[0].layers == (0,)


def test_melbo_objective_grows_with_training(tiny):
    prompts = ["What is the capital of France?"]
    ids = torch.tensor([chat_ids(tiny, prompts[0])])

    def change(steps: int) -> float:
        config = MelboConfig(source_layer=0, target_layer=3, n_vectors=1, radius=2.0, steps=steps, lr=0.05, show_progress=False)
        v = train_melbo(tiny, prompts, config)[0].vector
        from realize.data.activations import steer

        with torch.no_grad():
            clean = block_output(tiny.model, 3, ids)
            with steer(tiny.model, {0: v}, 1.0):
                return (block_output(tiny.model, 3, ids) - clean).norm().item()

    assert change(40) > change(1)


def test_melbo_config_validation():
    with pytest.raises(ValueError, match="target_layer"):
        MelboConfig(source_layer=5, target_layer=3)
    with pytest.raises(ValueError, match="radius"):
        MelboConfig(radius=0)


def test_caa_is_mean_difference(tiny):
    pairs = [("You are happy. Hi", "You are sad. Hi"), ("You are happy. Paris", "You are sad. Paris")]
    v = train_caa(tiny, pairs, CaaConfig(layer=2, positions=3, show_progress=False))
    expected = []
    for pos, neg in pairs:
        hp = block_output(tiny.model, 2, torch.tensor([chat_ids(tiny, pos)]))[0, -3:].mean(0)
        hn = block_output(tiny.model, 2, torch.tensor([chat_ids(tiny, neg)]))[0, -3:].mean(0)
        expected.append(hp - hn)
    torch.testing.assert_close(v.vector, torch.stack(expected).mean(0))
    assert v.layers == (2,) and v.method == "caa"
