"""The one attack shape and the shared mechanics: every registered attack takes `run(objective, lm, layout, config,
*, init=None)` and returns an AttackResult with typed frontier points; OOM halving, one-hot embeddings with an
`embed_scale`, the early-exit forward with KV, pad id and the retokenization context are each one helper."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from realize.attacks import ATTACKS, AttackSpec
from realize.attacks.base import (
    AttackResult, FrontierPoint, evaluate_in_batches, filter_context, is_out_of_memory, map_in_batches,
)
from realize.attacks.beam import BeamConfig
from realize.attacks.embeddings import embed_scale, one_hot_embeds
from realize.attacks.fluency import encode_head, lm_head_ids, prompt_ce, prompt_ce_and_grad
from realize.attacks.gcg import GCGConfig
from realize.attacks.objectives import TargetStringObjective, activation_objective
from realize.attacks.prompt_cache import run_to_layer
from realize.attacks.relaxed import shift_loss_from_embeds
from realize.attacks.sampling import retokenization_filter
from realize.data.chat import chat_layout, encode
from realize.data.models import LoadedModel, pad_id
from realize.data.shift import mean_shift, prompt_shifts

CONTEXTS = ["What is the capital of France?", "How do I bake bread at home?"]
LAYER = 2
SMALL = {  # CPU-seconds configs for the tiny model
    "gcg": dict(steps=2, width=8, top_k=8, init_length=4),
    "beam": dict(beam_width=2, samples_per_beam=3, length=3),
    "fluent": dict(lambdas=(0.0, 0.1), steps=2, width=6, top_k=8, lm_top_k=16,
                   init_beam=BeamConfig(beam_width=2, samples_per_beam=3, length=3)),
    "relaxed": dict(length=4, steps=3, polish_steps=1, polish=GCGConfig(width=6, top_k=6)),
    "random": dict(steps=2, width=8, length=4),
    "natural": dict(steps=2, width=8, top_k=8, lm_top_k=16, max_ce=50.0, max_surprisal=50.0,
                    init_beam=BeamConfig(beam_width=2, samples_per_beam=3, length=3)),
    "retrieval": dict(prompts=("You are a pirate.", "Explain it like I am five.", "Please answer briefly."), keep=2),
}


def _objective(lm: LoadedModel, placement: str = "prefix"):
    layout = chat_layout(lm.tokenizer, placement)
    ctx = [encode(lm.tokenizer, c) for c in CONTEXTS]
    source = encode(lm.tokenizer, "Explain it like I am five years old.")
    target = mean_shift(prompt_shifts(lm.model, layout, [source], ctx, LAYER)[0])
    return activation_objective(lm, target, LAYER, CONTEXTS, placement=placement)


@pytest.fixture(scope="module")
def objective(tiny: LoadedModel):
    return _objective(tiny)


def test_registry_covers_every_attack_with_its_config() -> None:
    assert set(ATTACKS) == {"natural", "gcg", "beam", "fluent", "relaxed", "random", "retrieval"} == set(SMALL)
    for spec in ATTACKS.values():
        assert isinstance(spec, AttackSpec) and dataclasses.is_dataclass(spec.config)
        assert spec.config.__dataclass_params__.frozen
        spec.config()  # every field has a default


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_attack_has_the_one_signature(name: str) -> None:
    params = inspect.signature(ATTACKS[name].run).parameters
    assert list(params) == ["objective", "lm", "layout", "config", "init"]
    assert params["init"].kind is inspect.Parameter.KEYWORD_ONLY and params["init"].default is None


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_attack_runs_and_returns_typed_results(tiny: LoadedModel, objective, name: str) -> None:
    spec = ATTACKS[name]
    config = spec.config(seed=1, **SMALL[name]) if "seed" in {f.name for f in dataclasses.fields(spec.config)} \
        else spec.config(**SMALL[name])
    result = spec.run(objective, tiny, objective.layout, config)
    assert isinstance(result, AttackResult) and result.attack == name and result.best_ids
    assert result.best_loss == pytest.approx(float(objective.losses(torch.tensor([result.best_ids]))[0]), abs=1e-4)
    assert all(isinstance(p, FrontierPoint) for p in result.frontier)
    assert bool(result.frontier) == (name in {"fluent", "natural", "retrieval"})
    json.dumps([dataclasses.asdict(p) for p in result.frontier])  # the optimize command writes them as JSON
    start = encode(tiny.tokenizer, "Please answer")
    if spec.takes_init:
        seeded = spec.run(objective, tiny, objective.layout, config, init=start)
        assert seeded.best_loss <= float(objective.losses(torch.tensor([start]))[0]) + 1e-6
    else:
        with pytest.raises(ValueError, match="init"):
            spec.run(objective, tiny, objective.layout, config, init=start)


# relaxed takes layout None too, but needs a loss of input embeddings, which the target-string objective lacks
@pytest.mark.parametrize("name", [n for n, s in sorted(ATTACKS.items()) if not s.needs_layout and n != "relaxed"])
def test_attacks_without_a_layout_run_on_the_prompt_text_alone(tiny: LoadedModel, name: str) -> None:
    """layout None (the target-string objective's own-text round trip) where the attack allows it."""
    objective = TargetStringObjective(tiny.model, tiny.tokenizer, "Tell me a story", "Sure, here is")
    result = ATTACKS[name].run(objective, tiny, None, ATTACKS[name].config(**SMALL[name]))
    assert result.best_ids and filter_context(objective) == ()


# ---- OOM halving ----------------------------------------------------------------------------------------------


class _OOMObjective:
    """loss = row sum; raises an out-of-memory RuntimeError (CUDA's message) for batches above `limit`."""

    def __init__(self, limit: int | None, error: type[Exception] = RuntimeError) -> None:
        self.limit, self.error, self.calls = limit, error, []

    def losses(self, prompts: torch.Tensor) -> torch.Tensor:
        self.calls.append(prompts.shape[0])
        if self.limit is not None and prompts.shape[0] > self.limit:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return prompts.float().sum(dim=1)


def test_evaluate_in_batches_halves_on_out_of_memory() -> None:
    cands = torch.randint(0, 50, (10, 3), generator=torch.Generator().manual_seed(0))
    fake = _OOMObjective(limit=3)
    losses, batch = evaluate_in_batches(fake, cands, 8)
    assert torch.equal(losses, cands.float().sum(dim=1))
    assert batch == 2 and fake.calls == [8, 4, 2, 2, 2, 2, 2]  # halved until it fits, then kept
    losses, batch = evaluate_in_batches(_OOMObjective(limit=None), cands, 0)  # 0 = all at once, kept at 0
    assert batch == 0 and losses.shape == (10,)
    _, batch = evaluate_in_batches(_OOMObjective(limit=5, error=torch.OutOfMemoryError), cands, 0)
    assert batch == 5
    with pytest.raises(RuntimeError, match="out of memory"):
        evaluate_in_batches(_OOMObjective(limit=0), cands, 4)  # still failing at one row: re-raised
    with pytest.raises(RuntimeError, match="shape mismatch"):  # any other error is not retried
        map_in_batches(lambda c: (_ for _ in ()).throw(RuntimeError("shape mismatch")), cands, 4)
    assert is_out_of_memory(torch.OutOfMemoryError("x")) and not is_out_of_memory(ValueError("out of memory"))


# ---- one-hot embeddings with an embed_scale --------------------------------------------------------------------


class _ScaledEmbedding(nn.Embedding):
    """transformers' Gemma `ScaledWordEmbedding`: rows times `embed_scale` inside the module."""

    def __init__(self, weight: torch.Tensor, scale: float) -> None:
        super().__init__(weight.shape[0], weight.shape[1])
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.embed_scale = torch.tensor(scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) * self.embed_scale.to(self.weight.dtype)


@pytest.fixture(scope="module")
def scaled(tiny: LoadedModel) -> LoadedModel:
    model = copy.deepcopy(tiny.model)
    model.model.embed_tokens = _ScaledEmbedding(model.model.embed_tokens.weight, 3.0)
    return LoadedModel(model=model, tokenizer=tiny.tokenizer, name="tiny-scaled", path="<fixture>")


def test_one_hot_embeds_keep_the_embed_scale(scaled: LoadedModel) -> None:
    ids = torch.tensor(encode(scaled.tokenizer, "Explain it like"))
    one_hot, embeds = one_hot_embeds(scaled.model, ids)
    assert float(embed_scale(scaled.model)) == 3.0 and one_hot.requires_grad
    assert torch.allclose(embeds[0], scaled.model.get_input_embeddings()(ids), atol=1e-6)
    assert torch.equal(one_hot.argmax(dim=1), ids) and float(one_hot.detach().sum()) == ids.shape[0]


def test_every_gradient_path_scores_what_the_token_path_scores(scaled: LoadedModel) -> None:
    """With embed_scale 3, the one-hot (gradient) path of each objective gives the loss of its token path, and
    the relaxed attack's embedding loss on embed(ids) equals the objective's loss (no double scaling)."""
    objective = _objective(scaled)
    prompt = torch.tensor(encode(scaled.tokenizer, "Explain it like"))
    token_loss = float(objective.losses(prompt.unsqueeze(0))[0])
    assert objective.loss_and_grad(prompt)[0] == pytest.approx(token_loss, abs=1e-4)
    embeds = scaled.model.get_input_embeddings()(prompt.unsqueeze(0))
    assert float(shift_loss_from_embeds(objective)(embeds)) == pytest.approx(token_loss, abs=1e-4)
    text = TargetStringObjective(scaled.model, scaled.tokenizer, "Tell me a story", "Sure, here is")
    assert text.loss_and_grad(prompt)[0] == pytest.approx(float(text.losses(prompt.unsqueeze(0))[0]), abs=1e-4)
    head = encode_head(scaled.model, lm_head_ids(objective.layout))
    ce = prompt_ce_and_grad(scaled.model, head, prompt)[0]
    assert ce == pytest.approx(float(prompt_ce(scaled.model, head, prompt.unsqueeze(0))[0]), abs=1e-4)


# ---- the early-exit forward, pad id, retokenization context -----------------------------------------------------


def test_run_to_layer_is_the_early_exit_forward_with_kv(tiny: LoadedModel) -> None:
    model = tiny.model
    ids = torch.tensor([encode(tiny.tokenizer, "Write a short poem about the sea.")])
    with torch.no_grad():
        full = model(ids, output_hidden_states=True).hidden_states[LAYER + 1]
    hooks = {n: dict(m._forward_hooks) for n, m in model.named_modules()}  # transformers may keep its own
    with torch.no_grad():
        hidden, kv = run_to_layer(model, LAYER, input_ids=ids)
        tail, _ = run_to_layer(model, LAYER, input_ids=ids[:, 4:], past=tuple((k[:, :, :4], v[:, :, :4])
                                                                              for k, v in kv))
    assert torch.allclose(hidden, full, atol=1e-5) and torch.allclose(tail, full[:, 4:], atol=1e-5)
    assert len(kv) == LAYER + 1 and kv[0][0].shape[2] == ids.shape[1]
    assert {n: dict(m._forward_hooks) for n, m in model.named_modules()} == hooks


def test_pad_id_falls_back_to_eos_then_zero() -> None:
    assert pad_id(SimpleNamespace(pad_token_id=7, eos_token_id=2)) == 7
    assert pad_id(SimpleNamespace(pad_token_id=None, eos_token_id=2)) == 2
    assert pad_id(SimpleNamespace(pad_token_id=None, eos_token_id=None)) == 0


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_attack_checks_retokenization_in_the_objectives_context(tiny, objective, monkeypatch, name) -> None:
    import importlib

    seen: list[tuple[int, ...]] = []

    def spy(tokenizer, layout, candidates, *, context=()):
        seen.append(tuple(context))
        return retokenization_filter(tokenizer, layout, candidates, context=context)

    for module in ("gcg", "beam", "fluent", "relaxed", "baselines"):
        monkeypatch.setattr(importlib.import_module(f"realize.attacks.{module}"), "retokenization_filter", spy)
    ATTACKS[name].run(objective, tiny, objective.layout, ATTACKS[name].config(**SMALL[name]))
    assert filter_context(objective) == tuple(objective.context_ids[0])
    if name != "retrieval":  # retrieval scores given prompts: it filters nothing
        assert seen and set(seen) == {filter_context(objective)}


@pytest.mark.slow
def test_suffix_placement_needs_the_context_in_the_check() -> None:
    """SmolLM2, suffix placement: a prompt that starts with a space round-trips after a context, but not right
    after the template's newline and the separator (they would merge into one token), so the check must place
    candidates in the objective's context (`filter_context`), as every attack does."""
    from realize.data.models import load_model

    tok = load_model().tokenizer
    layout = chat_layout(tok, "suffix")
    cand = torch.tensor([encode(tok, " Please answer briefly.")])
    context = encode(tok, "What is the capital of France?")
    assert bool(retokenization_filter(tok, layout, cand, context=context)[0])
    assert not bool(retokenization_filter(tok, layout, cand)[0])
