"""Oracle tests for reading and steering block outputs."""

from __future__ import annotations

import pytest
import torch

from realize.data.activations import block_output, block_outputs, decoder_layers, forward_hooks, steer
from realize.data.errors import UserInputError


def _ids(tiny, text="What is the capital of France?"):
    return torch.tensor([tiny.tokenizer(text, add_special_tokens=False)["input_ids"]])


def _hooks(model) -> dict[str, tuple[int, ...]]:
    """Forward-hook ids per module (transformers installs its own output-capturing hooks lazily)."""
    return {n: tuple(m._forward_hooks) for n, m in model.named_modules() if m._forward_hooks}


@pytest.fixture()
def _no_hooks(tiny):
    """Return a checker that no hook was added since the test started."""
    tiny.model(torch.tensor([[1, 2]]), output_hidden_states=True)  # let transformers install its own hooks
    before = _hooks(tiny.model)
    return lambda model: _hooks(model) == before


def test_decoder_layers_found(tiny):
    assert decoder_layers(tiny.model) is tiny.model.model.layers
    assert decoder_layers(tiny.model, "model.layers") is tiny.model.model.layers
    with pytest.raises(UserInputError):
        decoder_layers(tiny.model, "model.norm")


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_block_output_matches_hidden_states_oracle(tiny, layer, _no_hooks):
    ids = _ids(tiny)
    with torch.no_grad():
        oracle = tiny.model(ids, output_hidden_states=True).hidden_states[layer + 1]
        got = block_output(tiny.model, layer, ids)
    torch.testing.assert_close(got, oracle)
    assert _no_hooks(tiny.model)


def test_last_block_is_raw_not_final_normed(tiny):
    """transformers' last hidden state has the final norm applied; ours is the raw block output."""
    ids = _ids(tiny)
    last = tiny.model.config.num_hidden_layers - 1
    with torch.no_grad():
        normed = tiny.model.model(ids).last_hidden_state
        raw = block_outputs(tiny.model, [last], input_ids=ids)[last]
        torch.testing.assert_close(tiny.model.model.norm(raw), normed)
    assert not torch.allclose(raw, normed, atol=1e-3)


def test_block_outputs_with_padding_mask(tiny):
    short, long = _ids(tiny, "Paris"), _ids(tiny, "What is the capital of France?")
    ids = torch.full((2, long.shape[1]), tiny.tokenizer.pad_token_id)
    ids[0, : short.shape[1]] = short[0]
    ids[1] = long[0]
    mask = (torch.arange(long.shape[1]) < torch.tensor([[short.shape[1]], [long.shape[1]]])).long()
    with torch.no_grad():
        batch = block_output(tiny.model, 2, ids, mask)
        alone = block_output(tiny.model, 2, short)
    torch.testing.assert_close(batch[0, : short.shape[1]], alone[0], atol=1e-5, rtol=1e-4)


def test_out_of_range_layer(tiny):
    with pytest.raises(UserInputError, match="0..3"):
        block_output(tiny.model, 4, _ids(tiny))


def test_steer_adds_vector_and_cleans_up(tiny, _no_hooks):
    ids = _ids(tiny)
    torch.manual_seed(1)
    v = torch.randn(32)
    with torch.no_grad():
        before_logits = tiny.model(ids).logits
        clean = block_output(tiny.model, 1, ids)
        with steer(tiny.model, {1: v}, 2.5):
            steered = block_output(tiny.model, 1, ids)
            steered_logits = tiny.model(ids).logits
        after_logits = tiny.model(ids).logits
    torch.testing.assert_close(steered, clean + 2.5 * v)
    assert not torch.allclose(steered_logits, before_logits)
    assert torch.equal(after_logits, before_logits)
    assert _no_hooks(tiny.model)


def test_steer_removes_hooks_on_exception(tiny, _no_hooks):
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny.model, {0: torch.ones(32)}, 1.0):
            assert not _no_hooks(tiny.model)
            raise RuntimeError("boom")
    assert _no_hooks(tiny.model)


def test_forward_hooks_partial_registration_failure(tiny, _no_hooks):
    class NotAModule:
        def register_forward_hook(self, fn):
            raise TypeError("cannot hook")

    blocks = decoder_layers(tiny.model)
    with pytest.raises(TypeError):
        with forward_hooks([(blocks[0], lambda *a: None), (NotAModule(), lambda *a: None)]):
            pass
    assert _no_hooks(tiny.model)


def test_steer_bad_layer(tiny, _no_hooks):
    with pytest.raises(UserInputError):
        with steer(tiny.model, {9: torch.ones(32)}, 1.0):
            pass
    assert _no_hooks(tiny.model)


def test_block_output_gradient_flows_through_embeds(tiny):
    ids = _ids(tiny)
    embeds = tiny.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    out = block_outputs(tiny.model, [1], inputs_embeds=embeds)[1]
    out.sum().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0
