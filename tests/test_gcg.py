"""GCG engine: improves the loss, deterministic per seed (and pinned to the recorded trajectory), OOM halving,
variable length, never fails, config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest
import torch

from realize.attacks import gcg
from realize.attacks.gcg import GCGConfig
from realize.attacks.objectives import ActivationShiftObjective
from realize.data.chat import chat_layout, encode
from realize.data.shift import mean_shift, prompt_shifts

CONTEXTS = ["What is the capital of France?", "How do I bake bread?"]


class FakeObjective:
    """loss = mean(id % 7) / 7 + 0.05 * length; its gradient is exact for the one-hot relaxation of the first
    term. Optionally raises out-of-memory once for batches larger than `oom_above`."""

    def __init__(self, vocab: int, oom_above: int | None = None) -> None:
        self.vocab, self.oom_above, self.calls = vocab, oom_above, []

    def losses(self, prompts: torch.Tensor) -> torch.Tensor:
        self.calls.append(prompts.shape[0])
        if self.oom_above is not None and prompts.shape[0] > self.oom_above:
            self.oom_above = None
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return (prompts % 7).float().mean(dim=1) / 7 + 0.05 * prompts.shape[1]

    def loss_and_grad(self, prompt: torch.Tensor) -> tuple[float, torch.Tensor]:
        length = prompt.shape[0]
        grad = (torch.arange(self.vocab) % 7).float().repeat(length, 1) / (7 * length)
        return float(self.losses(prompt.unsqueeze(0))[0]), grad

    def metrics(self, prompt: torch.Tensor) -> Mapping[str, float]:
        return {"cos": 0.0}


def _tiny_objective(tiny, layer=2, contexts=CONTEXTS):
    tok = tiny.tokenizer
    layout = chat_layout(tok, "prefix")
    ctxs = [encode(tok, c) for c in contexts]
    target = mean_shift(prompt_shifts(tiny.model, layout, [encode(tok, "Explain it like I am five years old.")],
                                      ctxs, layer, pad_id=tok.pad_token_id)[0])
    return ActivationShiftObjective(tiny.model, tok, layout, target, layer, ctxs), layout, ctxs


def test_gcg_improves_loss_on_tiny_model(tiny):
    obj, layout, ctxs = _tiny_objective(tiny)
    config = GCGConfig(steps=8, width=24, top_k=16, init_length=6, seed=0, p_length_move=0.0)
    start = gcg.initial_ids(tiny.tokenizer, layout, config, torch.ones(len(tiny.tokenizer), dtype=torch.bool),
                            torch.Generator().manual_seed(0), context=ctxs[0])
    initial = float(obj.losses(torch.tensor([start]))[0])
    result = gcg.run(obj, tiny, layout, config)
    assert result.best_loss < initial - 0.05
    assert len(result.trajectory) == 8 and result.n_evaluations > 8 * 10
    assert [s.best_loss for s in result.trajectory] == sorted((s.best_loss for s in result.trajectory), reverse=True)
    assert result.best_loss == pytest.approx(float(obj.losses(torch.tensor([result.best_ids]))[0]), abs=1e-5)
    assert "cos" in result.trajectory[-1].metrics and result.best_prompt


def test_gcg_deterministic_per_seed(tiny):
    obj, layout, _ = _tiny_objective(tiny)
    config = GCGConfig(steps=3, width=12, top_k=8, init_length=5, seed=3, p_length_move=0.5)
    a = gcg.run(obj, tiny, layout, config)
    b = gcg.run(obj, tiny, layout, config)
    assert [s.prompt_ids for s in a.trajectory] == [s.prompt_ids for s in b.trajectory]
    assert [s.loss for s in a.trajectory] == [s.loss for s in b.trajectory]
    c = gcg.run(obj, tiny, layout, dataclasses.replace(config, seed=4))
    assert [s.prompt_ids for s in a.trajectory] != [s.prompt_ids for s in c.trajectory]


# Recorded from the code before the attack-signature refactor (commit 28c78a7: `gcg.run(obj, tokenizer, layout,
# GCGConfig(steps=6, width=16, topk=8, init_length=5, seed=3, p_length_move=0.5), filter_context=ctxs[0])`).
# A regression pin, not a quality number: it fails when a change alters what a seed does. Re-record it (and say
# why in the commit) only for a deliberate change of the search; it depends on the pinned CPU torch wheel.
PINNED_TRAJECTORY = [
    (90, 357, 90, 262, 90), (90, 357, 324, 262, 328), (280, 357, 324, 308, 328),
    (351, 357, 324, 308, 64), (351, 357, 324, 308, 328, 64), (51, 351, 357, 324, 308, 328, 64),
]


def test_gcg_trajectory_matches_the_recorded_one(tiny):
    contexts = ["What is the capital of France?", "How do I bake bread at home?", "Write a short poem about the sea."]
    obj, layout, _ = _tiny_objective(tiny, contexts=contexts)
    config = GCGConfig(steps=6, width=16, top_k=8, init_length=5, seed=3, p_length_move=0.5)
    result = gcg.run(obj, tiny, layout, config)
    assert [s.prompt_ids for s in result.trajectory] == PINNED_TRAJECTORY
    assert result.best_ids == PINNED_TRAJECTORY[-1]
    assert result.best_loss == pytest.approx(0.026541590690612793, abs=1e-6)


def test_gcg_survives_oom_and_keeps_halved_batch(tiny):
    fake = FakeObjective(len(tiny.tokenizer), oom_above=8)
    result = gcg.run(fake, tiny, None, GCGConfig(steps=3, width=16, top_k=8, batch_size=16, p_length_move=0.0))
    assert len(result.trajectory) == 3
    failed = next(i for i, n in enumerate(fake.calls) if n > 8)
    assert max(fake.calls[failed + 1 :]) <= 8  # after the failure, never above the halved size


def test_variable_length_moves_reach_shorter_prompts(tiny):
    fake = FakeObjective(len(tiny.tokenizer))  # prefers short prompts (0.05 per token)
    config = GCGConfig(steps=12, width=16, top_k=8, init_length=8, p_length_move=1.0, min_length=3, max_length=10)
    result = gcg.run(fake, tiny, None, config)
    lengths = {len(s.prompt_ids) for s in result.trajectory}
    assert len(lengths) > 1 and len(result.best_ids) < 8 and len(result.best_ids) >= 3


def test_gcg_never_fails_when_nothing_survives(tiny, monkeypatch):
    def reject_all(tok, layout, c, context=()):
        return torch.zeros(len(c), dtype=torch.bool)

    monkeypatch.setattr(gcg, "retokenization_filter", reject_all)
    fake = FakeObjective(len(tiny.tokenizer))
    init = encode(tiny.tokenizer, "Hello there")
    result = gcg.run(fake, tiny, None, GCGConfig(steps=3, width=8, top_k=4), init=init)
    assert len(result.trajectory) == 3 and all(s.n_candidates == 0 for s in result.trajectory)
    assert result.best_prompt == "Hello there" and result.best_ids == tuple(init)
    with pytest.raises(ValueError, match="init"):
        gcg.run(fake, tiny, None, GCGConfig(steps=1), init=[])


def test_early_stop(tiny):
    fake = FakeObjective(len(tiny.tokenizer))
    result = gcg.run(fake, tiny, None, GCGConfig(steps=50, width=32, top_k=8, init_length=4, early_stop_loss=0.45,
                                                 p_length_move=0.0))
    assert result.best_loss <= 0.45 and len(result.trajectory) < 50


def test_adaptive_n_replace_shrinks(tiny):
    class Flat(FakeObjective):
        def losses(self, prompts):
            return torch.ones(prompts.shape[0])

    result = gcg.run(Flat(len(tiny.tokenizer)), tiny, None,
                     GCGConfig(steps=6, width=4, top_k=4, n_replace=3, patience=2, p_length_move=0.0))
    assert result.config["final_n_replace"] == 1


@pytest.mark.parametrize(
    "field,value",
    [("steps", 0), ("width", 0), ("top_k", -1), ("n_replace", 0), ("buffer_size", 0), ("init_length", 0),
     ("p_length_move", 1.5), ("batch_size", -2), ("n_replace_min", 5), ("min_length", 40),
     ("early_stop_loss", float("inf"))],
)
def test_bad_config_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        GCGConfig(**{field: value})


def test_defaults_are_cpu_sized_without_cuda():
    config = GCGConfig()
    if not torch.cuda.is_available():
        assert (config.width, config.top_k, config.ascii_only) == (64, 64, True)
