"""`realize train-vectors --method melbo|caa ... --out FILE.safetensors`."""

from __future__ import annotations

import argparse

from data.caa_examples import builtin_pairs, read_pairs
from data.errors import UserInputError
from data.vectors import save_safetensors
from realize.commands.common import add_model_argument, build_config, load_model_arg
from realize.vector_training import CaaConfig, MelboConfig, train_caa, train_melbo

MELBO_PROMPTS = (
    "Tell me a story about a dragon.",
    "What is the best way to learn a new language?",
    "Can you give me some advice about my career?",
    "Describe a city you would like to visit.",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-vectors", help="train MELBO or CAA steering vectors to audit")
    parser.add_argument("--method", choices=("melbo", "caa"), required=True)
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument("--layer", type=int, default=None, help="source layer (melbo, default 7) / layer (caa, 12)")
    parser.add_argument("--target-layer", type=int, default=None, help="melbo: target block (default n_layers-8)")
    parser.add_argument("--n-vectors", type=int, default=4, help="melbo: number of orthogonal vectors")
    parser.add_argument("--radius", type=float, default=8.0, help="melbo: vector norm R")
    parser.add_argument("--steps", type=int, default=300, help="melbo: optimizer steps per vector")
    parser.add_argument("--lr", type=float, default=1e-3, help="melbo: AdamW learning rate")
    parser.add_argument("--prompts", action="append", default=None, help="melbo: training prompt (repeatable)")
    parser.add_argument("--pairs", default=None, help="caa: JSONL of {positive, negative} (default: built-in set)")
    parser.add_argument("--scale", type=float, default=1.0, help="caa: scale stored with the vector")
    parser.add_argument("--seed", type=int, default=0)
    add_model_argument(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if not args.out.endswith(".safetensors"):
        raise UserInputError(f"--out {args.out}: expected a .safetensors path")
    if args.method == "melbo":
        config = build_config(
            MelboConfig,
            {
                "source_layer": 7 if args.layer is None else args.layer,
                "target_layer": args.target_layer,
                "n_vectors": args.n_vectors,
                "radius": args.radius,
                "steps": args.steps,
                "lr": args.lr,
                "seed": args.seed,
            },
        )
        lm = load_model_arg(args)
        vectors = train_melbo(lm, args.prompts or MELBO_PROMPTS, config)
    else:
        pairs = read_pairs(args.pairs) if args.pairs else builtin_pairs()
        config = build_config(CaaConfig, {"layer": 12 if args.layer is None else args.layer, "scale": args.scale})
        lm = load_model_arg(args)
        vectors = [train_caa(lm, pairs, config)]
    save_safetensors(vectors, args.out)
    print(f"wrote {len(vectors)} vector(s) to {args.out}")
    return 0
