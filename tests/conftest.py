"""Shared fixtures: a tiny random Llama with a small byte-level BPE tokenizer and SmolLM2's chat template."""

from __future__ import annotations

import logging

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from realize.data.models import LoadedModel

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CORPUS = [
    "What is the capital of France? Paris is the capital.",
    "Explain it like I am five years old.",
    "You are a pirate. Answer every question like a pirate would.",
    "How do I bake bread at home? Mix flour, water, salt and yeast.",
    "Write a short poem about the sea and the wind.",
    "I have a question about my garden and the tomatoes in it.",
    "Please answer briefly and politely, in plain English.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
]


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return _tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny(tiny_tokenizer: PreTrainedTokenizerFast) -> LoadedModel:
    """A 4-block random Llama (hidden 32) on the tiny tokenizer; parameters frozen, eval mode."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tiny_tokenizer.bos_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tiny_tokenizer, name="tiny-llama", path="<fixture>")


@pytest.fixture(autouse=True)
def _quiet_transformers() -> None:
    logging.getLogger("transformers").setLevel(logging.ERROR)
