"""`realize behavior VECTOR --prompt "..."`: behavior recovery of a prompt against a steering vector.

On N held-out contexts (from the packaged `contexts` corpus, split with `data.corpora.split_contexts`), the
steered model writes T tokens; recovery = 1 - KL(steered||prompted) / KL(steered||base) (see
`scorers.behavior`). Prints the mean recovery with its bootstrap interval, the pooled ratio, and per context the
three generations side by side. `--json OUT` also writes the full result (atomically).
"""

from __future__ import annotations

import argparse
import dataclasses
import math

from realize.data.chat import PLACEMENTS
from realize.data.corpora import load_corpus, split_contexts
from realize.data.errors import UserInputError
from realize.data.safe_text import printable
from realize.commands.common import (
    add_model_argument,
    add_vector_arguments,
    build_config,
    load_model_arg,
    load_vectors_arg,
    require_scale,
    write_json_atomic,
)
from realize.scorers.behavior import BehaviorConfig, behavior_recovery


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("behavior", help="does a prompt make the model do what the vector does?")
    parser.add_argument("vector", metavar="VECTOR", help="vector file (every vector in it is scored)")
    parser.add_argument("--prompt", required=True, help="candidate prompt placed in the user turn")
    parser.add_argument("--placement", choices=PLACEMENTS, default="prefix", help="where the prompt goes")
    parser.add_argument("--tokens", type=int, default=32, help="tokens the steered model generates (default 32)")
    parser.add_argument("--contexts", type=int, default=8, help="held-out contexts (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="context split and bootstrap seed (default 0)")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the full result as JSON")
    add_model_argument(parser)
    add_vector_arguments(parser)
    parser.set_defaults(func=_run)


def _short(text: str, width: int = 100) -> str:
    """One terminal-safe line: generations and names may hold ESC sequences or bidi overrides."""
    text = " ".join(text.split())
    return printable(text if len(text) <= width else text[: width - 1] + "…")


def _run(args: argparse.Namespace) -> int:
    if not args.prompt.strip():
        raise UserInputError("--prompt: expected a non-empty prompt")
    config = build_config(BehaviorConfig, {"max_new_tokens": args.tokens, "seed": args.seed})
    all_contexts = load_corpus("contexts")
    if not 1 <= args.contexts < len(all_contexts):
        raise UserInputError(f"--contexts {args.contexts}: expected 1..{len(all_contexts) - 1}")
    _, held_out = split_contexts(all_contexts, args.contexts, seed=args.seed)
    lm = load_model_arg(args)
    vectors = load_vectors_arg(args.vector, args, lm)
    results = []
    for vector in vectors:
        scale = require_scale(vector, args.vector)
        result = behavior_recovery(lm, vector.directions, scale, args.prompt.strip(), held_out, args.placement, config)
        results.append({"vector": vector.name, "layers": list(vector.layers), **dataclasses.asdict(result)})
        lo, hi = result.interval
        label = f"{printable(vector.name)} (layers {','.join(map(str, vector.layers))}, x{scale:g})"
        print(f"=== {label}: behavior recovery {result.recovery:.3f} [{lo:.3f}, {hi:.3f}] "
              f"(pooled {result.pooled_recovery:.3f}, {len(held_out)} held-out contexts, {args.tokens} tokens)")
        if result.inert:
            print("    note: the vector barely changes the model's outputs at this scale; recovery is not meaningful")
        for k, c in enumerate(result.per_context):
            r = "  nan" if math.isnan(c.recovery) else f"{c.recovery:5.2f}"
            print(f"[{k}] r={r}  KL(s||p)={c.kl_steered_prompted:.3f}  KL(s||b)={c.kl_steered_base:.3f}  "
                  f"{_short(c.context, 70)}")
            print(f"     steered : {_short(c.steered)}")
            print(f"     prompted: {_short(c.prompted)}")
            print(f"     base    : {_short(c.base)}")
    if args.json:
        write_json_atomic(args.json, {"prompt": args.prompt, "model": lm.name, "results": results})
        print(f"wrote {args.json}")
    return 0
