"""Gemma 3's architecture in the unit suite: a tiny random Gemma3ForCausalLM (scaled embeddings, sandwich norms,
sliding-window and global layers, final logit soft-capping switched on) with the tiny tokenizer and no chat
template, so the plain layout. Oracles are the model's own forward; the real model is in test_gemma_model.py."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from realize.attacks.objectives import ActivationShiftObjective, one_hot_embeds
from realize.attacks.relaxed import shift_loss_from_embeds
from realize.attacks.text_objectives import final_logits
from realize.data.activations import block_outputs, decoder_layers, steer
from realize.data.chat import chat_layout, encode
from realize.data.generation import chat_ids, generate_ids
from realize.data.models import LoadedModel
from realize.data.shift import mean_shift, prompt_shifts, shift_metrics
from realize.vector_training import MelboConfig, train_melbo

CONTEXTS = ["What is the capital of France?", "How do I bake bread?"]
PROMPT = "Explain it like I am five years old."
OTHER = "You are a pirate."


@pytest.fixture(scope="module")
def gemma_tiny(tiny_tokenizer) -> LoadedModel:
    tok = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer, bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<|endoftext|>")
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, sliding_window=512,  # Gemma-3-270M's window
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        final_logit_softcapping=30.0, max_position_embeddings=256, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = Gemma3ForCausalLM(config).eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tok, name="tiny-gemma", path="<fixture>")


def _ids(lm: LoadedModel) -> tuple[list[int], list[list[int]]]:
    return encode(lm.tokenizer, PROMPT), [encode(lm.tokenizer, c) for c in CONTEXTS]


def test_blocks_logits_and_embeddings_match_the_model(gemma_tiny):
    model = gemma_tiny.model
    assert len(decoder_layers(model)) == 4
    prompt, contexts = _ids(gemma_tiny)
    ids = torch.tensor([chat_layout(gemma_tiny.tokenizer).place(prompt, contexts[0]).ids])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        blocks = block_outputs(model, [0, 1, 2, 3], input_ids=ids)
    for i in range(3):
        torch.testing.assert_close(blocks[i], out.hidden_states[i + 1], rtol=0, atol=0)
    torch.testing.assert_close(final_logits(model, blocks[3]), out.logits, rtol=1e-5, atol=1e-5)
    assert out.logits.abs().max() <= 30.0  # the soft-capping ran
    embed = model.get_input_embeddings()
    assert float(embed.embed_scale) == pytest.approx(math.sqrt(32), rel=1e-6)
    _, embeds = one_hot_embeds(model, ids[0])
    torch.testing.assert_close(embeds.detach(), out.hidden_states[0], rtol=0, atol=0)


def test_objectives_agree_on_gemma(gemma_tiny):
    """KV-reusing packed objective == evaluation path; the relaxed attack's embedding loss == objective loss (the
    template's embeddings are scaled once, by the module, and the prompt's by one_hot_embeds)."""
    tok, model, layer = gemma_tiny.tokenizer, gemma_tiny.model, 2
    layout = chat_layout(tok)
    prompt, contexts = _ids(gemma_tiny)
    other = encode(tok, OTHER)
    target = mean_shift(prompt_shifts(model, layout, [prompt], contexts, layer, pad_id=tok.pad_token_id)[0])
    reference = shift_metrics(prompt_shifts(model, layout, [other], contexts, layer, pad_id=tok.pad_token_id)[0],
                              target, None)
    objective = ActivationShiftObjective(model, tok, layout, target, layer, contexts)
    got = objective.shift_metrics(torch.tensor(other))
    assert got.cos == pytest.approx(reference.cos, abs=1e-5)
    assert got.norm_ratio == pytest.approx(reference.norm_ratio, rel=1e-5)
    _, embeds = one_hot_embeds(model, torch.tensor(other))
    relaxed = float(shift_loss_from_embeds(objective)(embeds).detach())
    assert relaxed == pytest.approx(float(objective.losses(torch.tensor([other]))[0]), abs=1e-5)


def test_steer_and_melbo_on_gemma(gemma_tiny):
    ids = chat_ids(gemma_tiny, CONTEXTS[0])
    assert ids[0] == gemma_tiny.tokenizer.bos_token_id
    base = generate_ids(gemma_tiny, ids, 4)
    vectors = train_melbo(gemma_tiny, CONTEXTS, MelboConfig(source_layer=0, target_layer=3, n_vectors=1, radius=50.0,
                                                            steps=3, lr=0.5, show_progress=False))
    with steer(gemma_tiny.model, vectors[0].directions, 1.0):
        steered = generate_ids(gemma_tiny, ids, 4)
    assert steered != base and generate_ids(gemma_tiny, ids, 4) == base
