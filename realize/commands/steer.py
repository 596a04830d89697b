"""`realize steer VECTOR --prompt ...`: generate with and without the vector, side by side."""

from __future__ import annotations

import argparse

import torch

from realize.data.activations import steer
from realize.data.generation import generate
from realize.data.safe_text import printable
from realize.commands.common import (
    add_model_argument,
    add_vector_arguments,
    load_model_arg,
    load_vectors_arg,
    require_scale,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("steer", help="generate from the model with and without a steering vector")
    parser.add_argument("vector", metavar="VECTOR", help="vector file (all vectors in it are shown)")
    parser.add_argument("--prompt", action="append", default=None, help="user message (repeatable)")
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per generation (default 48)")
    add_model_argument(parser)
    add_vector_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    lm = load_model_arg(args)
    vectors = load_vectors_arg(args.vector, args, lm)
    prompts = args.prompt or ["Tell me about your weekend.", "What is the capital of France?"]
    for prompt in prompts:
        print(f"=== {printable(prompt)}")
        print(f"[base] {printable(generate(lm, prompt, args.tokens), keep_newlines=True)}")
        for vector in vectors:
            scale = require_scale(vector, args.vector)
            with steer(lm.model, vector.directions, scale), torch.no_grad():
                text = generate(lm, prompt, args.tokens)
            # names come from files and text from byte-level tokens: neither may drive the terminal
            print(f"[{printable(vector.name)} x{scale:g}] {printable(text, keep_newlines=True)}")
    return 0
