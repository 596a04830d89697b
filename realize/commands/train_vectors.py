"""`realize train-vectors --method melbo|caa|distill ... --out FILE.safetensors`."""

from __future__ import annotations

import argparse

from realize.data.caa_examples import builtin_pairs, read_pairs
from realize.data.chat import chat_layout
from realize.data.corpora import load_corpus
from realize.data.errors import UserInputError
from realize.data.vectors import save_safetensors
from realize.commands.common import add_model_argument, build_config, load_model_arg
from realize.distill import DistillConfig, train_distilled
from realize.vector_training import CaaConfig, MelboConfig, train_caa, train_melbo

MELBO_PROMPTS = (
    "Tell me a story about a dragon.",
    "What is the best way to learn a new language?",
    "Can you give me some advice about my career?",
    "Describe a city you would like to visit.",
)


# flag attribute -> config field; flags left unset take the config's defaults
MELBO_FLAGS = {"layer": "source_layer", "target_layer": "target_layer", "n_vectors": "n_vectors", "radius": "radius",
               "steps": "steps", "lr": "lr", "seed": "seed"}
CAA_FLAGS = {"layer": "layer", "scale": "scale"}


def _given(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, object]:
    return {field: getattr(args, flag) for flag, field in flags.items() if getattr(args, flag) is not None}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-vectors", help="train MELBO, CAA or prompt-distilled steering vectors")
    parser.add_argument("--method", choices=("melbo", "caa", "distill"), required=True)
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument("--layer", type=int, help="melbo: source layer (7) / caa: layer (12) / distill: layer (6)")
    parser.add_argument("--target-layer", type=int, help="melbo: target block (n_layers - 8)")
    parser.add_argument("--n-vectors", type=int, help="melbo: number of orthogonal vectors (4)")
    parser.add_argument("--radius", type=float,
                        help="melbo: vector norm R (default: calibrated per model, ~47 on SmolLM2, ~240 on Gemma)")
    parser.add_argument("--steps", type=int, help="melbo: optimizer steps per vector (100) / distill: Adam steps (150)")
    parser.add_argument("--lr", type=float, help="melbo: AdamW learning rate (R x 1e-4) / distill: Adam (0.05)")
    parser.add_argument("--prompt", help="distill: the natural prompt whose behavior the vector should reproduce")
    parser.add_argument("--tokens", type=int, help="distill: prompted continuation tokens per context (24)")
    parser.add_argument("--contexts", type=int, default=8,
                        help="distill: base contexts to train on, from the shipped corpus (8)")
    parser.add_argument("--prompts", action="append", help="melbo: training prompt (repeatable)")
    parser.add_argument("--pairs", help="caa: JSONL of {positive, negative} (default: built-in happy/sad set)")
    parser.add_argument("--scale", type=float, help="caa: scale stored with the vector (1.0)")
    parser.add_argument("--seed", type=int, help="melbo: initialization seed (0)")
    add_model_argument(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if not args.out.endswith(".safetensors"):
        raise UserInputError(f"--out {args.out}: expected a .safetensors path")
    if args.method == "melbo":
        config = build_config(MelboConfig, _given(args, MELBO_FLAGS))
        lm = load_model_arg(args)
        vectors = train_melbo(lm, args.prompts or MELBO_PROMPTS, config)
    elif args.method == "distill":
        if not (args.prompt or "").strip():
            raise UserInputError("--prompt: distill needs the natural prompt to reproduce")
        config = build_config(DistillConfig, _given(args, {"steps": "steps", "lr": "lr", "tokens": "tokens"}))
        contexts = load_corpus("contexts")
        if not 1 <= args.contexts <= len(contexts):
            raise UserInputError(f"--contexts {args.contexts}: expected 1..{len(contexts)}")
        lm = load_model_arg(args)
        layer = 6 if args.layer is None else args.layer
        result = train_distilled(lm, chat_layout(lm.tokenizer), args.prompt.strip(), layer,
                                 contexts[: args.contexts], config)
        print(f"KL(prompted || steered) {result.losses[0]:.3f} -> {result.losses[-1]:.3f} nats/token, "
              f"|v| = {float(result.vector.vector.norm()):.2f}")
        vectors = [result.vector]
    else:
        pairs = read_pairs(args.pairs) if args.pairs else builtin_pairs()
        config = build_config(CaaConfig, _given(args, CAA_FLAGS))
        lm = load_model_arg(args)
        vectors = [train_caa(lm, pairs, config)]
    save_safetensors(vectors, args.out)
    print(f"wrote {len(vectors)} vector(s) to {args.out}")
    return 0
