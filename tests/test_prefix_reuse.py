"""Shared-prefix reuse: block outputs, forced log-probs and prompt shifts equal the model's own full forwards."""

from __future__ import annotations

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from realize.data.activations import steer
from realize.data.chat import chat_layout, encode
from realize.data.models import LoadedModel
from realize.data.prefix_reuse import block_outputs_after_prefix, shared_prefix_len
from realize.data.shift import prompt_shifts
from realize.data.steered import forced_logprobs

CONTEXTS = ["What is the capital of France?", "How do I bake bread?", "Name a bird.", "Why is the sky blue at noon?"]
PROMPTS = ["Explain it like I am five years old.", "You are a pirate."]


@pytest.fixture(scope="module")
def gemma_tiny(tiny_tokenizer) -> LoadedModel:
    tok = tiny_tokenizer
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, sliding_window=512,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        final_logit_softcapping=30.0, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
    )
    model = Gemma3ForCausalLM(config).eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tok, name="tiny-gemma", path="<fixture>")


@pytest.fixture(params=["llama", "gemma"])
def lm(request, tiny, gemma_tiny) -> LoadedModel:
    return tiny if request.param == "llama" else gemma_tiny


def test_shared_prefix_len():
    assert shared_prefix_len([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]], limit=10) == 2
    assert shared_prefix_len([[1, 2, 3], [1, 2, 3]], limit=2) == 2  # capped by the limit
    assert shared_prefix_len([[1, 2, 3], [1, 2, 3]], limit=10) == 3  # capped by the shortest row
    assert shared_prefix_len([[7, 2], [1, 2]], limit=10) == 0
    assert shared_prefix_len([], limit=3) == 0


def test_block_outputs_after_prefix_equal_full_forwards(lm):
    tok = lm.tokenizer
    layout = chat_layout(tok, "prefix")
    rows = [layout.place(encode(tok, PROMPTS[0]), encode(tok, c)).ids for c in CONTEXTS]
    shared, hidden = block_outputs_after_prefix(lm.model, rows, [1, 2], pad_id=tok.pad_token_id, limit=100)
    assert shared >= len(layout.head) + len(encode(tok, PROMPTS[0]))  # the template head and the prompt ran once
    for b, row in enumerate(rows):
        with torch.no_grad():
            states = lm.model(torch.tensor([row]), output_hidden_states=True).hidden_states
        for layer in (1, 2):
            torch.testing.assert_close(hidden[layer][b, : len(row) - shared], states[layer + 1][0, shared:],
                                       atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("steered", [False, True])
def test_forced_logprobs_equal_full_forwards(lm, steered):
    tok = lm.tokenizer
    layout = chat_layout(tok, "prefix")
    inputs = [layout.place(encode(tok, PROMPTS[1]), encode(tok, c)).ids for c in CONTEXTS]
    continuations = [encode(tok, y) for y in ("Paris, of course.", "With flour", "A crow!", "Light scatters.")]
    vector = {1: torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(1))}
    with steer(lm.model, vector, 3.0) if steered else torch.no_grad():
        got = forced_logprobs(lm, inputs, continuations, batch_size=3)  # a batch of 3 and one of 1 (nothing shared)
        for x, y, logp in zip(inputs, continuations, got, strict=True):
            with torch.no_grad():
                logits = lm.model(torch.tensor([list(x) + list(y)])).logits[0, len(x) - 1 : len(x) - 1 + len(y)]
            torch.testing.assert_close(logp, torch.log_softmax(logits.float(), dim=-1), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("placement", ["prefix", "suffix", "system"])
def test_prompt_shifts_equal_full_forwards(lm, placement):
    tok = lm.tokenizer
    layout = chat_layout(tok, placement)
    contexts = [encode(tok, c) for c in CONTEXTS]
    prompts = [encode(tok, p) for p in PROMPTS]
    deltas = prompt_shifts(lm.model, layout, prompts, contexts, 2, pad_id=tok.pad_token_id, batch_size=3)
    for p, prompt in enumerate(prompts):
        for k, ctx in enumerate(contexts):
            base, placed = layout.place(None, ctx), layout.place(prompt, ctx)
            with torch.no_grad():
                hb = lm.model(torch.tensor([base.ids]), output_hidden_states=True).hidden_states[3][0]
                hp = lm.model(torch.tensor([placed.ids]), output_hidden_states=True).hidden_states[3][0]
            oracle = hp[list(placed.aligned)] - hb[list(base.aligned)]
            torch.testing.assert_close(deltas[p][k], oracle, atol=1e-5, rtol=1e-4)
