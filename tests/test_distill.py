"""Prompt-distilled vectors: training lowers KL(prompted || steered) and the CLI writes a loadable vector."""

from __future__ import annotations

import pytest
import torch

from realize.data.chat import chat_layout
from realize.distill import DistillConfig, train_distilled

CONTEXTS = ["What is the capital of France?", "How do I bake bread at home?", "Write a short poem."]


def test_training_reduces_the_kl(tiny):
    layout = chat_layout(tiny.tokenizer)
    # the random tiny model barely reacts to prompts (KL ~2e-5): a small step size fits that scale
    result = train_distilled(tiny, layout, "You are a pirate.", 2, CONTEXTS, DistillConfig(steps=25, tokens=5, lr=0.003))
    assert result.losses[-1] < 0.7 * result.losses[0]
    assert result.vector.layers == (2,) and result.vector.scale == 1.0 and result.vector.notes == "You are a pirate."
    assert float(result.vector.vector.norm()) > 0
    assert not any(p.requires_grad for p in tiny.model.parameters())


def test_config_is_validated():
    with pytest.raises(ValueError, match="steps"):
        DistillConfig(steps=0)
    with pytest.raises(ValueError, match="lr"):
        DistillConfig(lr=0)


def test_cli_trains_a_distilled_vector(tiny, tmp_path, monkeypatch):
    import realize.commands.train_vectors as tv
    from realize.cli import main
    from realize.data.vectors import load_vectors

    monkeypatch.setattr(tv, "load_model_arg", lambda args: tiny)
    out = tmp_path / "d.safetensors"
    assert main(["train-vectors", "--method", "distill", "--prompt", "You are a pirate.", "--layer", "1",
                 "--steps", "3", "--out", str(out)]) == 0
    (vector,) = load_vectors(out)
    assert vector.layers == (1,) and vector.method == "distill" and vector.scale == 1.0
    assert main(["train-vectors", "--method", "distill", "--layer", "1", "--out", str(out)]) == 2  # no --prompt
