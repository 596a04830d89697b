"""Prompt placement alignment and activation-shift metrics against a hand-written oracle."""

from __future__ import annotations

import pytest
import torch

from realize.data.chat import chat_layout, encode
from realize.data.errors import UserInputError
from realize.data.shift import aligned_activations, generic_direction, mean_shift, project_out, prompt_shifts, shift_metrics

CONTEXT = "What is the capital of France?"
PROMPT = "Explain it like I am five years old."


@pytest.mark.parametrize("placement", ["prefix", "suffix", "system"])
def test_aligned_tokens_identical(tiny_tokenizer, placement):
    layout = chat_layout(tiny_tokenizer, placement)
    ctx, p = encode(tiny_tokenizer, CONTEXT), encode(tiny_tokenizer, PROMPT)
    base, prompted = layout.place(None, ctx), layout.place(p, ctx)
    assert [base.ids[j] for j in base.aligned] == [prompted.ids[j] for j in prompted.aligned]
    assert [prompted.ids[j] for j in prompted.prompt] == p
    assert len(prompted.ids) == len(base.ids) + len(p) + (len(layout.sep) if placement != "system" else 0) - (
        len(layout.head) - len(layout.sys_head) - len(layout.sys_tail) if placement == "system" else 0
    )


@pytest.mark.parametrize("placement,expected", [("prefix", f"{PROMPT}\n{CONTEXT}"), ("suffix", f"{CONTEXT}\n{PROMPT}")])
def test_segments_equal_joined_text_tokenization(tiny_tokenizer, placement, expected):
    layout = chat_layout(tiny_tokenizer, placement)
    ids = layout.place(encode(tiny_tokenizer, PROMPT), encode(tiny_tokenizer, CONTEXT)).ids
    text = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": expected}], tokenize=False, add_generation_prompt=True
    )
    assert list(ids) == encode(tiny_tokenizer, text)


def test_system_placement_replaces_system_message(tiny_tokenizer):
    layout = chat_layout(tiny_tokenizer, "system")
    text = tiny_tokenizer.decode(list(layout.place(encode(tiny_tokenizer, PROMPT), encode(tiny_tokenizer, CONTEXT)).ids))
    assert f"system\n{PROMPT}<|im_end|>" in text and "helpful assistant" not in text


def test_missing_chat_template(tiny_tokenizer):
    """No chat template: the plain layout (tests/test_gemma_plain.py), which has no system turn."""
    tok = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer)
    assert chat_layout(tok, "prefix").template == "plain"
    with pytest.raises(UserInputError, match="chat template"):
        chat_layout(tok, "system")
    with pytest.raises(UserInputError, match="placement"):
        chat_layout(tiny_tokenizer, "middle")  # type: ignore[arg-type]


def test_prompt_shifts_match_oracle(tiny):
    tok, model = tiny.tokenizer, tiny.model
    layout = chat_layout(tok, "prefix")
    contexts = [encode(tok, CONTEXT), encode(tok, "How do I bake bread?")]
    prompt = encode(tok, PROMPT)
    deltas = prompt_shifts(model, layout, [prompt], contexts, 2, pad_id=tok.pad_token_id, batch_size=3)[0]
    for k, ctx in enumerate(contexts):
        base, placed = layout.place(None, ctx), layout.place(prompt, ctx)
        with torch.no_grad():
            hb = model(torch.tensor([base.ids]), output_hidden_states=True).hidden_states[3][0]
            hp = model(torch.tensor([placed.ids]), output_hidden_states=True).hidden_states[3][0]
        oracle = hp[list(placed.aligned)] - hb[list(base.aligned)]
        torch.testing.assert_close(deltas[k], oracle, atol=1e-5, rtol=1e-4)
    base_acts = aligned_activations(model, layout, None, contexts, 2, pad_id=tok.pad_token_id)
    assert [b.shape[0] for b in base_acts] == [d.shape[0] for d in deltas]


def test_shift_metrics_properties():
    torch.manual_seed(0)
    target = torch.randn(16)
    g = torch.randn(16)
    deltas = [target.repeat(3, 1) * 0.5, target.repeat(2, 1) * 0.5]
    m = shift_metrics(deltas, target, g)
    assert m.cos == pytest.approx(1.0, abs=1e-5) and m.specific_cos == pytest.approx(1.0, abs=1e-5)
    assert m.norm_ratio == pytest.approx(0.5, abs=1e-5) and m.per_position_cos == pytest.approx(1.0, abs=1e-5)
    # a shift purely along g: positive raw cosine with a target that has a g component, ~0 specific cosine
    target2 = g + torch.randn(16) * 0.3
    m2 = shift_metrics([g.repeat(2, 1)], target2, g)
    assert m2.cos > 0.8 and abs(m2.specific_cos) < 1e-3
    assert torch.dot(project_out(target2, g), g).abs() < 1e-4
    assert mean_shift(deltas).shape == (16,)


def test_generic_direction_is_mean_of_prompt_shifts(tiny):
    tok = tiny.tokenizer
    layout = chat_layout(tok, "prefix")
    contexts = [encode(tok, CONTEXT)]
    prompts = [encode(tok, "I have a question."), encode(tok, "Please answer briefly.")]
    g = generic_direction(tiny.model, layout, prompts, contexts, 1, pad_id=tok.pad_token_id)
    each = [mean_shift(s) for s in prompt_shifts(tiny.model, layout, prompts, contexts, 1, pad_id=tok.pad_token_id)]
    torch.testing.assert_close(g, (each[0] + each[1]) / 2)
