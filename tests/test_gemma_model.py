"""Slow tests on the second architecture, the base Gemma-3-270M (installed by scripts/setup): loading by name,
the plain layout on its tokenizer, block outputs, the scaled one-hot embedding, final logits, the KV-reuse
objective, steering and MELBO. The quick audit on it is `benchmarks/bench_gemma_audit.py` (too slow for CI)."""

from __future__ import annotations

import math

import pytest
import torch

from realize.attacks.objectives import ActivationShiftObjective, one_hot_embeds
from realize.attacks.text_objectives import final_logits
from realize.data.activations import block_output, block_outputs, decoder_layers, steer
from realize.data.chat import chat_layout, encode
from realize.data.generation import chat_ids, generate_ids
from realize.data.models import GEMMA_MODEL, gemma_gguf_path, load_model, resolve_model_spec
from realize.data.shift import mean_shift, prompt_shifts, shift_metrics
from realize.vector_training import MelboConfig, train_melbo

pytestmark = pytest.mark.slow

CONTEXTS = ["What is the capital of France?", "How do I bake bread at home?", "Tell me about your weekend."]
PROMPT = "Explain it like I am five years old."


@pytest.fixture(scope="module")
def gemma():
    return load_model(GEMMA_MODEL)


def test_loads_by_name_and_by_path(gemma):
    assert gemma.name == GEMMA_MODEL and type(gemma.model).__name__ == "Gemma3ForCausalLM"
    assert gemma.num_layers == 18 and gemma.hidden_size == 640
    assert not gemma.tokenizer.chat_template and gemma.tokenizer.bos_token == "<bos>"
    path, name = resolve_model_spec(str(gemma_gguf_path()))  # the assembled file gets the same name (and cache)
    assert path.name == "gemma-3-270m-q4_k_m.gguf" and name == GEMMA_MODEL


def test_plain_layout_on_gemma_tokenizer(gemma):
    tok = gemma.tokenizer
    layout = chat_layout(tok, "prefix")
    assert layout.template == "plain" and layout.head == (tok.bos_token_id,) and tok.decode(list(layout.tail)) == "\n"
    for context in CONTEXTS:
        ctx, p = encode(tok, context), encode(tok, PROMPT)
        placed, base = layout.place(p, ctx), layout.place(None, ctx)
        # segments equal the tokenizer's own encoding of the joined text (it adds <bos> itself)
        assert list(placed.ids) == tok(f"{PROMPT}\n{context}\n")["input_ids"]
        assert list(base.ids) == tok(f"{context}\n")["input_ids"] == chat_ids(gemma, context)
        assert [placed.ids[j] for j in placed.aligned] == [base.ids[j] for j in base.aligned] == [*ctx, *layout.tail]
    suffix = chat_layout(tok, "suffix").place(encode(tok, PROMPT), encode(tok, CONTEXTS[0]))
    assert list(suffix.ids) == tok(f"{CONTEXTS[0]}\n{PROMPT}\n")["input_ids"]


def test_block_outputs_are_hidden_states_and_logits_match(gemma):
    """Sandwich norms: the block's output (what hooks read and steer) is the residual stream after the block,
    hidden_states[i + 1]; the final norm + LM head (+ soft-capping, None here) reproduce the model's logits."""
    model = gemma.model
    assert len(decoder_layers(model)) == 18 and decoder_layers(model) is model.model.layers
    ids = torch.tensor([chat_ids(gemma, "The cat sat on the mat because it was tired.")])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        blocks = block_outputs(model, list(range(18)), input_ids=ids)
        for i in range(17):  # hidden_states[18] has the final norm applied
            torch.testing.assert_close(blocks[i], out.hidden_states[i + 1], rtol=0, atol=0)
        assert getattr(model.config, "final_logit_softcapping", None) is None
        torch.testing.assert_close(final_logits(model, blocks[17]), out.logits, rtol=1e-5, atol=1e-4)


def test_one_hot_embedding_includes_the_scale(gemma):
    """Gemma scales embeddings by sqrt(d): one_hot @ W * embed_scale must equal the model's own embedding."""
    model = gemma.model
    embed = model.get_input_embeddings()
    assert float(embed.embed_scale) == pytest.approx(math.sqrt(640), rel=1e-6)
    ids = torch.tensor(chat_ids(gemma, PROMPT))
    one_hot, embeds = one_hot_embeds(model, ids)
    with torch.no_grad():
        own = embed(ids.unsqueeze(0))
        first = model(ids.unsqueeze(0), output_hidden_states=True).hidden_states[0]
    torch.testing.assert_close(embeds.detach(), own, rtol=0, atol=0)
    torch.testing.assert_close(embeds.detach(), first, rtol=0, atol=0)
    # and the gradient reaches the one-hot through the scaled embeddings
    with torch.enable_grad():
        block_outputs(model, [3], inputs_embeds=embeds)[3].sum().backward()
    assert one_hot.grad is not None and one_hot.grad.abs().sum() > 0


def test_kv_reuse_objective_matches_plain_shifts(gemma):
    """The objective's packed, KV-reusing forward (sliding-window layers included) gives the evaluation path's
    shift metrics on Gemma."""
    tok, model, layer = gemma.tokenizer, gemma.model, 6
    layout = chat_layout(tok, "prefix")
    contexts = [encode(tok, c) for c in CONTEXTS]
    target = mean_shift(prompt_shifts(model, layout, [encode(tok, PROMPT)], contexts, layer,
                                      pad_id=tok.pad_token_id)[0])
    other = encode(tok, "You are a pirate.")
    reference = shift_metrics(prompt_shifts(model, layout, [other], contexts, layer, pad_id=tok.pad_token_id)[0],
                              target, None)
    objective = ActivationShiftObjective(model, tok, layout, target, layer, contexts)
    got = objective.shift_metrics(torch.tensor(other))
    assert got.cos == pytest.approx(reference.cos, abs=1e-4)
    assert got.norm_ratio == pytest.approx(reference.norm_ratio, rel=1e-4)
    assert float(objective.losses(torch.tensor([encode(tok, PROMPT)]))[0]) < 1e-3


def test_steering_changes_generation_and_restores(gemma):
    ids = chat_ids(gemma, "Tell me about your weekend.")
    hooks = [dict(block._forward_hooks) for block in decoder_layers(gemma.model)]  # transformers keeps its own
    base = generate_ids(gemma, ids, 12)
    v = torch.randn(640, generator=torch.Generator().manual_seed(0))
    with steer(gemma.model, {6: v / v.norm() * 400.0}, 1.0):
        steered = generate_ids(gemma, ids, 12)
    assert steered != base
    assert [dict(block._forward_hooks) for block in decoder_layers(gemma.model)] == hooks
    assert generate_ids(gemma, ids, 12) == base


def test_melbo_calibrates_radius_and_trains(gemma):
    """MELBO on the plain layout: the calibrated R is Gemma's (hundreds, not SmolLM2's 48), the vector keeps it,
    and a few steps increase the change at the target block."""
    prompt = "Tell me a story about a dragon."
    ids = torch.tensor([chat_ids(gemma, prompt)])

    def trained(steps: int, radius: float | None = None) -> torch.Tensor:
        config = MelboConfig(n_vectors=1, steps=steps, radius=radius, show_progress=False)
        return train_melbo(gemma, [prompt], config)[0].vector

    def change(v: torch.Tensor) -> float:
        with torch.no_grad():
            clean = block_output(gemma.model, 10, ids)
            with steer(gemma.model, {7: v}, 1.0):
                return (block_output(gemma.model, 10, ids) - clean).norm().item()

    v = trained(4)
    radius = v.norm().item()
    assert 100 < radius < 800
    # the same initialization (seed), one step, at the same R and so the same learning rate
    assert change(v) > change(trained(1, radius))
