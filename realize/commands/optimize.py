"""`realize optimize VECTOR --layer I --scale A --out run.json`: search for a prompt whose activation shift at
layer I reproduces a*v, then evaluate the best prompt on held-out contexts.

Attacks are dispatched through `ATTACKS` (name -> function of an `OptimizeSetup`). The JSON holds: best_prompt, best_ids, opt and held-out metrics (cos, specific_cos,
per_position_cos, norm_ratio, per_context_cos), the trajectory, the configs, the contexts and the seconds.
The specific cosine uses g estimated from the generic prompts corpus on the same contexts (optimization g for
the search, held-out g for the held-out metrics).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from realize.attacks.base import AttackResult
from realize.attacks.baselines import RandomSearchConfig, natural_retrieval, random_search
from realize.attacks.beam import BeamConfig
from realize.attacks.beam import run as beam_run
from realize.attacks.fluent import FluentConfig
from realize.attacks.fluent import run as fluent_run
from realize.attacks.gcg import GCGConfig
from realize.attacks.gcg import run as gcg_run
from realize.attacks.objectives import ActivationObjectiveConfig, ActivationShiftObjective, estimate_generic
from realize.attacks.relaxed import RelaxedConfig
from realize.attacks.relaxed import run as relaxed_run
from realize.data.chat import PLACEMENTS, ChatLayout, chat_layout, encode
from realize.data.errors import UserInputError
from realize.data.models import LoadedModel
from realize.data.shift import prompt_shifts, shift_metrics
from realize.data.vectors import single_layer
from realize.commands.common import (
    add_model_argument, add_vector_arguments, build_config, load_model_arg, load_vectors_arg, require_scale,
    write_json_atomic,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimizeSetup:
    """Everything an attack needs; built once per command."""

    lm: LoadedModel
    objective: ActivationShiftObjective
    layout: ChatLayout
    opt_contexts: tuple[str, ...]
    args: argparse.Namespace


def _gcg(setup: OptimizeSetup) -> AttackResult:
    a = setup.args
    values: dict[str, Any] = {"steps": a.steps, "seed": a.seed, "show_progress": not a.quiet,
                              "init_length": a.length, "allow_non_ascii": a.allow_non_ascii}
    if a.width is not None:
        values["width"] = a.width
    if a.topk is not None:
        values["topk"] = a.topk
    if a.init is not None:
        values["init_prompt"] = a.init
    if a.early_stop is not None:
        values["early_stop_loss"] = a.early_stop
    config = build_config(GCGConfig, values)
    ctx = setup.objective.context_ids[0]
    start = _start(setup)
    result = gcg_run(setup.objective, setup.lm.tokenizer, setup.layout, config, filter_context=ctx,
                     init_ids=None if start is None else start.best_ids)
    return _with_start(result, start)


def _start(setup: OptimizeSetup) -> AttackResult | None:
    """--init-from: the best prompt of natural-prompt retrieval or of the beam search, as the start of gcg/fluent."""
    a = setup.args
    if a.init_from is None:
        return None
    return _retrieval(setup) if a.init_from == "retrieval" else _beam(setup)


def _with_start(result: AttackResult, start: AttackResult | None) -> AttackResult:
    """Record the initializer (attack, prompt, seconds) in the result's config; total seconds include it."""
    if start is None:
        return result
    config = {**result.config, "init_from": start.attack, "init_prompt_text": start.best_prompt,
              "init_seconds": start.seconds}
    return dataclasses.replace(result, config=config, seconds=result.seconds + start.seconds,
                               n_evaluations=result.n_evaluations + start.n_evaluations)


def _random(setup: OptimizeSetup) -> AttackResult:
    a = setup.args
    values: dict[str, Any] = {"steps": a.steps, "seed": a.seed, "length": a.length, "show_progress": not a.quiet,
                              "allow_non_ascii": a.allow_non_ascii}
    if a.width is not None:
        values["width"] = a.width
    config = build_config(RandomSearchConfig, values)
    return random_search(setup.objective, setup.lm.tokenizer, config, layout=setup.layout,
                         filter_context=setup.objective.context_ids[0])


def _retrieval(setup: OptimizeSetup) -> AttackResult:
    from realize.data.corpora import load_corpus, read_prompt_file

    prompts = read_prompt_file(setup.args.prompts) if setup.args.prompts else load_corpus("natural_prompts")
    return natural_retrieval(setup.objective, prompts, setup.lm.tokenizer, show_progress=not setup.args.quiet)


def _beam_config(a: argparse.Namespace) -> BeamConfig:
    return build_config(BeamConfig, {"length": a.length, "seed": a.seed, "ascii_only": not a.allow_non_ascii,
                                     "show_progress": not a.quiet})


def _beam(setup: OptimizeSetup) -> AttackResult:
    return beam_run(setup.objective, setup.lm, setup.layout, _beam_config(setup.args))


def _fluent(setup: OptimizeSetup) -> AttackResult:
    a = setup.args
    values: dict[str, Any] = {"steps": a.steps, "seed": a.seed, "ascii_only": not a.allow_non_ascii,
                              "show_progress": not a.quiet, "init_beam": _beam_config(a)}
    if a.width is not None:
        values["width"] = a.width
    if a.topk is not None:
        values.update(top_k=a.topk, lm_top_k=max(64, a.topk))
    start = _start(setup)
    init = start.best_ids if start is not None else None if a.init is None else encode(setup.lm.tokenizer, a.init)
    result = fluent_run(setup.objective, setup.lm, setup.layout, build_config(FluentConfig, values), init=init)
    return _with_start(result, start)


def _relaxed(setup: OptimizeSetup) -> AttackResult:
    a = setup.args
    config = build_config(RelaxedConfig, {"length": a.length, "steps": a.steps, "seed": a.seed,
                                          "ascii_only": not a.allow_non_ascii, "show_progress": not a.quiet})
    return relaxed_run(setup.objective, setup.lm, setup.layout, config)


ATTACKS: dict[str, Callable[[OptimizeSetup], AttackResult]] = {
    "gcg": _gcg, "beam": _beam, "fluent": _fluent, "relaxed": _relaxed, "random": _random, "retrieval": _retrieval,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("optimize", help="search for a prompt that reproduces a steering vector's shift")
    p.add_argument("vector", metavar="VECTOR", help="vector file (.safetensors, .pt, .gguf, .npy)")
    p.add_argument("--out", required=True, help="output JSON path (written atomically)")
    p.add_argument("--attack", default="gcg", help=f"search method: {', '.join(ATTACKS)} (default gcg)")
    p.add_argument("--index", type=int, default=0, help="which vector of a multi-vector file (default 0)")
    p.add_argument("--steps", type=int, default=60, help="optimization steps (default 60)")
    p.add_argument("--width", type=int, default=None, help="candidates per step (default 64 CPU / 512 GPU)")
    p.add_argument("--topk", type=int, default=None, help="top-k tokens per position (default 64 CPU / 256 GPU)")
    p.add_argument("--length", type=int, default=12, help="initial prompt length in tokens (default 12)")
    p.add_argument("--init", default=None, help="initial prompt text (default 'x x x ...')")
    p.add_argument("--init-from", choices=("retrieval", "beam"), default=None,
                   help="gcg/fluent: start from the best natural prompt (--prompts corpus) or the beam search's prompt")
    p.add_argument("--early-stop", type=float, default=None, help="stop once the loss is at most this")
    p.add_argument("--placement", choices=PLACEMENTS, default="prefix", help="where the prompt goes (default prefix)")
    p.add_argument("--contexts", type=int, default=8, help="optimization contexts (default 8)")
    p.add_argument("--heldout", type=int, default=16, help="held-out contexts for evaluation (default 16)")
    p.add_argument("--contexts-file", default=None, help="file of base contexts (default: shipped corpus)")
    p.add_argument("--prompts", default=None, help="retrieval: file of natural prompts (default: shipped corpus)")
    p.add_argument("--beta", type=float, default=0.1, help="weight of the norm term (default 0.1)")
    p.add_argument("--gamma", type=float, default=1.0, help="weight of the specific-cosine term (default 1.0)")
    p.add_argument("--no-specific", action="store_true", help="do not estimate g (no specific-cosine term)")
    p.add_argument("--allow-non-ascii", action="store_true", help="allow non-ASCII tokens")
    p.add_argument("--seed", type=int, default=0, help="search random seed (default 0)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the optimization/held-out split (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_argument(p)
    add_vector_arguments(p)
    p.set_defaults(func=run_command)


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
    pad = int(tok.pad_token_id if tok.pad_token_id is not None else 0)
    deltas = prompt_shifts(lm.model, layout, [prompt], [encode(tok, c) for c in contexts], layer, pad_id=pad)[0]
    return dataclasses.asdict(shift_metrics(deltas, target, generic))


def run_command(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.attack not in ATTACKS:
        raise UserInputError(f"--attack {args.attack}: expected one of {', '.join(ATTACKS)}")
    if args.length < 1:
        raise UserInputError(f"--length {args.length}: prompt length must be >= 1")
    if args.init_from is not None and args.attack not in ("gcg", "fluent"):
        raise UserInputError(f"--init-from: only gcg and fluent take a start prompt, not --attack {args.attack}")
    if args.init_from is not None and args.init is not None:
        raise UserInputError("--init and --init-from: pass one of them")
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
    setup = OptimizeSetup(lm, objective, layout, tuple(opt), args)
    result = ATTACKS[args.attack](setup)
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
        "frontier": [dict(f) for f in result.frontier],
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
