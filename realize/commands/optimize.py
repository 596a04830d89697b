"""`realize optimize VECTOR --layer I --scale A --out run.json`: search for a prompt whose activation shift at
layer I reproduces a*v, then evaluate the best prompt on held-out contexts. The default search is the strongest one,
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
import time
from typing import Any

import torch

from realize.attacks import ATTACKS
from realize.attacks.base import AttackResult
from realize.attacks.objectives import ActivationObjectiveConfig, ActivationShiftObjective, estimate_generic
from realize.data.chat import PLACEMENTS, ChatLayout, chat_layout, encode
from realize.data.errors import UserInputError
from realize.data.models import LoadedModel, pad_id
from realize.data.shift import prompt_shifts, shift_metrics
from realize.data.vectors import single_layer
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


def _with_start(result: AttackResult, start: AttackResult | None) -> AttackResult:
    """Record the initializer (attack, prompt, seconds) in the result's config; total seconds include it."""
    if start is None:
        return result
    config = {**result.config, "init_from": start.attack, "init_prompt_text": start.best_prompt,
              "init_seconds": start.seconds}
    return dataclasses.replace(result, config=config, seconds=result.seconds + start.seconds,
                               n_evaluations=result.n_evaluations + start.n_evaluations)


def run_attack(args: argparse.Namespace, objective: ActivationShiftObjective, lm: LoadedModel,
               layout: ChatLayout) -> AttackResult:
    """--attack from --init (text) or --init-from (the best prompt of retrieval or beam search), or its default
    start (natural: the best prompt of retrieval, i.e. a natural start)."""
    start = None
    init = None if args.init is None else encode(lm.tokenizer, args.init)
    init_from = args.init_from
    if init_from is None and args.init is None and args.attack == "natural":
        init_from = "retrieval"
    if init_from is not None:
        start = ATTACKS[init_from].run(objective, lm, layout, attack_config(init_from, args))
        init = start.best_ids
    spec = ATTACKS[args.attack]
    result = spec.run(objective, lm, layout, attack_config(args.attack, args), init=init)
    return _with_start(result, start)


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


def evaluate_prompt(lm: LoadedModel, layout: ChatLayout, layer: int, prompt: list[int], target: torch.Tensor,
                    contexts: list[str], generic: torch.Tensor | None) -> dict[str, Any]:
    """Metrics of `prompt` on `contexts` via `data.shift` (full forwards, no search machinery)."""
    tok = lm.tokenizer
    deltas = prompt_shifts(lm.model, layout, [prompt], [encode(tok, c) for c in contexts], layer, pad_id=pad_id(tok))[0]
    return dataclasses.asdict(shift_metrics(deltas, target, generic))


def run_command(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
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
    layer, direction = single_layer(vector)
    target = require_scale(vector, args.vector) * direction.float()
    layout = chat_layout(lm.tokenizer, args.placement)
    opt, held = _contexts(args)
    g_opt = None if args.no_specific else estimate_generic(lm, layout, layer, opt)
    g_held = None if args.no_specific else estimate_generic(lm, layout, layer, held)
    obj_config = build_config(ActivationObjectiveConfig, {"beta": args.beta, "gamma": args.gamma})
    objective = ActivationShiftObjective(lm.model, lm.tokenizer, layout, target, layer,
                                         [encode(lm.tokenizer, c) for c in opt], generic=g_opt, config=obj_config)
    result = run_attack(args, objective, lm, layout)
    best = list(result.best_ids)
    opt_metrics = evaluate_prompt(lm, layout, layer, best, target, opt, g_opt)
    held_metrics = evaluate_prompt(lm, layout, layer, best, target, held, g_held)
    payload = {
        "vector": {"path": args.vector, "name": vector.name, "layer": layer, "scale": vector.scale,
                   "target_norm": float(target.norm())},
        "model": lm.name, "attack": result.attack, "placement": args.placement,
        "best_prompt": result.best_prompt, "best_ids": best, "best_loss": result.best_loss,
        "opt": opt_metrics, "heldout": held_metrics,
        "trajectory": [dataclasses.asdict(s) for s in result.trajectory],
        "frontier": [dataclasses.asdict(f) for f in result.frontier],
        "config": {"attack": dict(result.config), "objective": dataclasses.asdict(obj_config)},
        "contexts": {"opt": opt, "heldout": held}, "n_evaluations": result.n_evaluations,
        "search_seconds": result.seconds, "seconds": time.perf_counter() - t0,
    }
    write_json_atomic(args.out, payload)
    spec = held_metrics["specific_cos"]
    print(f"best prompt: {result.best_prompt!r}")
    print(f"held-out cos {held_metrics['cos']:.3f}" + ("" if spec is None else f", specific cos {spec:.3f}")
          + f", norm ratio {held_metrics['norm_ratio']:.2f}  ({args.out})")
    return 0
