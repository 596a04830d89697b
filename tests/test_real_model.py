"""Slow tests on the embedded SmolLM2-135M-Instruct (installed by scripts/setup)."""

from __future__ import annotations

import time

import pytest
import torch

from realize.data.activations import block_output, steer
from realize.data.generation import chat_ids, generate_ids
from realize.data.models import DEFAULT_MODEL, load_model
from realize.vector_training import MelboConfig, train_melbo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    return load_model(DEFAULT_MODEL)


def test_default_model_shape_and_cached_reload(smol):
    assert smol.num_layers == 30 and smol.hidden_size == 576
    start = time.perf_counter()
    again = load_model(DEFAULT_MODEL)
    assert time.perf_counter() - start < 10  # cached: no dequantization
    ids = torch.tensor([chat_ids(smol, "Hi")])
    with torch.no_grad():
        torch.testing.assert_close(again.model(ids).logits, smol.model(ids).logits)


def test_tokenizer_round_trip_and_special_tokens(smol):
    tok = smol.tokenizer
    text = "Hello world, it's a test: accents éà, symbols {}[] and  double spaces.\nNew line."
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    ids = chat_ids(smol, "What is the capital of France?")
    rendered = tok.decode(ids)
    assert rendered.startswith("<|im_start|>system\n") and rendered.endswith("<|im_start|>assistant\n")


def test_generates_and_stops_at_eos(smol):
    new = generate_ids(smol, chat_ids(smol, "What is the capital of France?"), 40)
    assert 0 < len(new) < 40 and new[-1] == smol.tokenizer.eos_token_id
    assert "Paris" in smol.tokenizer.decode(new)


def test_steering_changes_generation_and_restores(smol):
    ids = chat_ids(smol, "Tell me about your weekend.")
    base = generate_ids(smol, ids, 20)
    torch.manual_seed(0)
    v = torch.randn(576)
    v = v / v.norm() * 60.0
    with steer(smol.model, {6: v}, 1.0):
        steered = generate_ids(smol, ids, 20)
    assert steered != base
    assert generate_ids(smol, ids, 20) == base


def test_melbo_few_steps_increases_objective(smol):
    prompt = "Tell me a story about a dragon."
    ids = torch.tensor([chat_ids(smol, prompt)])

    def trained(steps: int) -> list[torch.Tensor]:
        config = MelboConfig(source_layer=7, n_vectors=2, steps=steps, radius=32.0, lr=4e-3, show_progress=False)
        return [v.vector for v in train_melbo(smol, [prompt], config)]

    def change(v: torch.Tensor) -> float:
        with torch.no_grad():
            clean = block_output(smol.model, 22, ids)
            with steer(smol.model, {7: v}, 1.0):
                return (block_output(smol.model, 22, ids) - clean).norm().item()

    a, b = trained(6)
    assert a.norm().item() == pytest.approx(32.0, rel=1e-4) and abs(torch.dot(a, b).item()) < 1e-2
    start, _ = trained(1)  # same seed: the same initialization, one step
    assert change(a) > change(start)
