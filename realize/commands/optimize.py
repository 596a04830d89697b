"""`realize optimize VECTOR --scale A --out run.json [--objective activation|behavior]`: search for a prompt whose
activation shift at the vector's layer(s) reproduces a*v (or that makes the model do what the vector does), then
evaluate the best prompt on held-out contexts (the work is `realize.optimizing.run_optimize`). The default search is the strongest one,
`--attack natural` (GCG with whole-word moves and a fluency budget) started from the best natural prompt of the
retrieval corpus.

Attacks are dispatched through `realize.attacks.ATTACKS` (name -> entry point with the one signature
`run(objective, lm, layout, config, *, init=None)` and its config class); this command only maps flags onto the
attack's config (`attack_config`). The JSON holds: best_prompt, best_ids, opt and held-out metrics (cos,
specific_cos, per_position_cos, norm_ratio, per_context_cos), the trajectory, the frontier (typed points as
dicts), the configs, the contexts and the seconds. The specific cosine uses g estimated from the generic prompts
corpus on the same contexts (optimization g for the search, held-out g for the held-out metrics).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any


from realize.attacks import ATTACKS
from realize.attacks.objectives import ActivationObjectiveConfig
from realize.data.chat import PLACEMENTS, encode
from realize.data.errors import UserInputError
from realize.optimizing import OptimizeRequest, run_optimize
from realize.commands.common import (
    add_model_argument, add_vector_arguments, build_config, load_model_arg, load_vectors_arg, require_scale,
    write_json_atomic,
)

logger = logging.getLogger(__name__)


def attack_config(name: str, args: argparse.Namespace) -> Any:
    """The config of attack `name` from the command's flags: each flag sets the config field of the same meaning
    where the attack has one (--length is GCG's `init_length`); fluent's beam initializer takes the beam flags."""
    config_class = ATTACKS[name].config
    fields = {f.name for f in dataclasses.fields(config_class)}
    flags: dict[str, Any] = {
        "steps": args.steps, "seed": args.seed, "length": args.length, "init_length": args.length,
        "width": args.width, "top_k": args.top_k, "ascii_only": not args.allow_non_ascii,
        "early_stop_loss": args.early_stop, "show_progress": not args.quiet,
    }
    values = {k: v for k, v in flags.items() if k in fields and v is not None}
    if name in ("fluent", "natural"):
        values["init_beam"] = attack_config("beam", args)
        if args.top_k is not None:
            values["lm_top_k"] = max(64, args.top_k)
    if name == "retrieval" and args.prompts:
        from realize.data.corpora import read_prompt_file

        values["prompts"] = tuple(read_prompt_file(args.prompts))
    return build_config(config_class, values)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("optimize", help="search for a prompt that reproduces a steering vector's shift")
    p.add_argument("vector", metavar="VECTOR", help="vector file (.safetensors, .pt, .gguf, .npy)")
    p.add_argument("--out", required=True, help="output JSON path (written atomically)")
    p.add_argument("--attack", default="natural",
                   help=f"search method: {', '.join(ATTACKS)} (default natural: GCG with whole-word moves and a "
                        "fluency budget, from the best natural prompt of --prompts)")
    p.add_argument("--index", type=int, default=0, help="which vector of a multi-vector file (default 0)")
    p.add_argument("--steps", type=int, default=60, help="optimization steps (default 60)")
    p.add_argument("--width", type=int, default=None,
                   help="candidates per step (default: natural 32; gcg 64 CPU / 512 GPU)")
    p.add_argument("--top-k", "--topk", dest="top_k", type=int, default=None,
                   help="top-k tokens per position (default 64 CPU / 256 GPU)")
    p.add_argument("--length", type=int, default=12, help="initial prompt length in tokens (default 12)")
    p.add_argument("--init", default=None, help="start prompt text (default: the attack's own start)")
    p.add_argument("--init-from", choices=("retrieval", "beam"), default=None,
                   help=f"{'/'.join(_takers())}: start from the best natural prompt (--prompts corpus) or the beam "
                        "search's prompt (default: retrieval for natural, the attack's own start for the others)")
    p.add_argument("--early-stop", type=float, default=None, help="stop once the loss is at most this")
    p.add_argument("--placement", choices=PLACEMENTS, default="prefix", help="where the prompt goes (default prefix)")
    p.add_argument("--contexts", type=int, default=8, help="optimization contexts (default 8)")
    p.add_argument("--heldout", type=int, default=16, help="held-out contexts for evaluation (default 16)")
    p.add_argument("--contexts-file", default=None, help="file of base contexts (default: shipped corpus)")
    p.add_argument("--prompts", default=None, help="retrieval: file of natural prompts (default: shipped corpus)")
    p.add_argument("--objective", choices=("activation", "behavior"), default="activation",
                   help="activation: match the shift at the vector's layer(s); behavior: make the model do what the "
                   "vector does (KL along the steered text)")
    p.add_argument("--behavior-tokens", type=int, default=24, help="behavior: steered tokens per context (24)")
    p.add_argument("--beta", type=float, default=0.1, help="weight of the norm term (default 0.1)")
    p.add_argument("--gamma", type=float, default=1.0, help="weight of the specific-cosine term (default 1.0)")
    p.add_argument("--no-specific", action="store_true", help="do not estimate g (no specific-cosine term)")
    p.add_argument("--allow-non-ascii", action="store_true", help="allow non-ASCII tokens (configs: ascii_only=False)")
    p.add_argument("--seed", type=int, default=0, help="search random seed (default 0)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the optimization/held-out split (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_argument(p)
    add_vector_arguments(p)
    p.set_defaults(func=run_command)


def _takers() -> list[str]:
    return [name for name, spec in ATTACKS.items() if spec.takes_init]


def _contexts(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    from realize.data.corpora import load_corpus, read_prompt_file, split_contexts

    contexts = read_prompt_file(args.contexts_file) if args.contexts_file else load_corpus("contexts")
    if not contexts:
        raise UserInputError("contexts: the context list is empty")
    if args.contexts < 1 or args.heldout < 1:
        raise UserInputError("--contexts/--heldout: expected at least 1 context each")
    if args.contexts + args.heldout > len(contexts):
        raise UserInputError(f"--contexts {args.contexts} + --heldout {args.heldout}: only {len(contexts)} contexts")
    opt, held = split_contexts(contexts, args.heldout, args.split_seed)
    return opt[: args.contexts], held


def run_command(args: argparse.Namespace) -> int:
    if args.attack not in ATTACKS:
        raise UserInputError(f"--attack {args.attack}: expected one of {', '.join(ATTACKS)}")
    if args.length < 1:
        raise UserInputError(f"--length {args.length}: prompt length must be >= 1")
    if args.init_from is not None and args.init is not None:
        raise UserInputError("--init and --init-from: pass one of them")
    if (args.init is not None or args.init_from is not None) and not ATTACKS[args.attack].takes_init:
        flag = "--init" if args.init is not None else "--init-from"
        raise UserInputError(f"{flag}: only {', '.join(_takers())} take a start prompt, not --attack {args.attack}")
    if args.init is not None and not args.init.strip():
        raise UserInputError("--init: expected non-empty text")
    if args.width is not None and args.width < 1:
        raise UserInputError(f"--width {args.width}: expected >= 1")
    lm = load_model_arg(args)
    vectors = load_vectors_arg(args.vector, args, lm)
    if not 0 <= args.index < len(vectors):
        raise UserInputError(f"--index {args.index}: {args.vector} holds {len(vectors)} vector(s)")
    vector = vectors[args.index]
    require_scale(vector, args.vector)
    opt, held = _contexts(args)
    init_from = args.init_from
    if init_from is None and args.init is None and args.attack == "natural":
        init_from = "retrieval"  # natural GCG's default start: the best natural prompt of the corpus
    request = build_config(OptimizeRequest, {
        "attack": args.attack, "attack_config": attack_config(args.attack, args), "objective": args.objective,
        "objective_config": build_config(ActivationObjectiveConfig, {"beta": args.beta, "gamma": args.gamma}),
        "specific": not args.no_specific, "behavior_tokens": args.behavior_tokens, "placement": args.placement,
        "init": None if args.init is None else tuple(encode(lm.tokenizer, args.init)), "init_from": init_from,
        "init_config": None if init_from is None else attack_config(init_from, args),
    })
    report = run_optimize(lm, vector, opt, held, request)
    payload = {"vector": {"path": args.vector, "name": vector.name, "layers": list(vector.layers),
                          "scale": vector.scale}, "model": lm.name, "placement": args.placement,
               **report.to_dict(), "config": {"attack": dict(report.result.config),
                                              "objective": dataclasses.asdict(request.objective_config)}}
    write_json_atomic(args.out, payload)
    held_metrics = report.heldout
    print(f"best prompt: {report.best_prompt!r}")
    if args.objective == "behavior":
        print(f"held-out behavior recovery {held_metrics['recovery']:.3f}, direction cos "
              f"{held_metrics['direction_cos']:.2f}, push {held_metrics['effect_ratio']:.2f}x the vector's  ({args.out})")
    else:
        spec = held_metrics.get("specific_cos")
        print(f"held-out cos {held_metrics['cos']:.3f}" + ("" if spec is None else f", specific cos {spec:.3f}")
              + f", norm ratio {held_metrics['norm_ratio']:.2f}  ({args.out})")
    return 0
