"""`realize audit VECTOR_FILES... [--demo] --out DIR`: calibrated verdicts, report, dataset of realizable steers.

Also runs under `accelerate launch [--num_processes N] -m realize audit ...` or `torchrun --nproc-per-node N -m
realize audit ...`: the pending items are split across the processes, each writes its finished items, the main
process merges (`realize merge DIR` does the same by hand)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from realize.data.atomic import write_text_atomic
from realize.data.errors import UserInputError
from realize.data.models import cache_root
from realize.data.safe_text import printable
from realize.data.vectors import SteeringVector, save_safetensors
from realize.audit_batch import audit_shard, balanced, lookup, plan_audit
from realize.audit_output import (
    IDENTITY,
    ITEMS,
    merge_directory,
    summary_line,
    write_plan,
)
from realize.config import BUDGETS, PRESETS, AuditConfig
from realize.audit_store import ItemStore
from realize.audit_types import VectorAudit
from realize.commands.common import (
    add_model_argument,
    add_vector_arguments,
    build_config,
    load_model_arg,
    load_vectors_arg,
    require_scale,
)
from realize.distributed import process_state
from realize.vector_training import MelboConfig, train_melbo
from realize.verdict import VerdictThresholds

DEMO_PROMPTS = ("Tell me a story about a dragon.", "What is the best way to learn a new language?")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("audit", help="audit vectors: calibrated verdict, HTML report, dataset")
    parser.add_argument("vectors", nargs="*", metavar="VECTOR_FILE", help="vector files (see `realize inspect`)")
    parser.add_argument("--demo", action="store_true", help="train two MELBO vectors and audit them")
    parser.add_argument("--out", default="runs/audit", help="output directory (default runs/audit)")
    parser.add_argument("--budget", choices=tuple(BUDGETS), default="default", help="search effort (default)")
    parser.add_argument("--placement", choices=("prefix", "suffix", "system"), default="prefix")
    parser.add_argument("--seed", type=int, default=0)
    default = PRESETS["default"]
    parser.add_argument("--n-null", type=int, help="nulls from the natural shift distribution per layer and norm "
                        f"(default budget: {default['n_null']})")
    parser.add_argument("--n-isotropic", type=int, help="isotropic random-direction nulls, reference only "
                        f"(default budget: {default['n_isotropic']})")
    parser.add_argument("--n-positive", type=int, help="held-out natural-prompt controls per layer "
                        f"(default budget: {default['n_positive']})")
    parser.add_argument("--n-opt-contexts", type=int, help="optimization contexts, the only ones the searches see "
                        f"(default budget: {default['n_opt_contexts']})")
    parser.add_argument("--n-selection", type=int, help="selection contexts, which choose the best prompt "
                        f"(default budget: {default['n_selection']})")
    parser.add_argument("--n-test", type=int, help="test contexts, which measure every reported number "
                        f"(default budget: {default['n_test']})")
    parser.add_argument("--axes", choices=("both", "activation", "behavior"), default="both",
                        help="activation: can a prompt produce the shift? behavior: can a prompt make the model do "
                        "what the vector does? (default both)")
    parser.add_argument("--behavior-tokens", type=int, help="steered tokens per context on the behavior axis "
                        f"(default budget: {default['behavior_tokens']})")
    parser.add_argument("--min-realism", type=float, help="realism a prompt needs to count as natural (default: "
                        "the realism classifier's fitted threshold)")
    parser.add_argument("--no-manifold", action="store_true", help="skip the on-manifold diagnostic")
    parser.add_argument("--overwrite", action="store_true", help="discard results of another configuration in --out")
    parser.add_argument("--no-control-cache", action="store_true",
                        help="do not reuse calibration controls cached by earlier runs (under $REALIZE_CACHE)")
    parser.add_argument("--control-cache", metavar="DIR", help="directory of the calibration-control cache "
                        "(default $REALIZE_CACHE/controls; e.g. one shared by several machines)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_argument(parser)
    add_vector_arguments(parser)
    parser.set_defaults(func=_run)


def _config(args: argparse.Namespace) -> AuditConfig:
    """The budget's preset (`AuditConfig(budget=...)`, the same as the library's), with the flags given on top."""
    values: dict[str, object] = {"budget": args.budget, "placement": args.placement, "seed": args.seed,
                                 "manifold": not args.no_manifold, "show_progress": not args.quiet,
                                 "axes": ("activation", "behavior") if args.axes == "both" else (args.axes,)}
    for flag in ("n_null", "n_isotropic", "n_positive", "n_opt_contexts", "n_selection", "n_test", "behavior_tokens"):
        if getattr(args, flag) is not None:
            values[flag] = getattr(args, flag)
    if args.min_realism is not None:
        values["thresholds"] = build_config(VerdictThresholds, {"min_realism": args.min_realism})
    return build_config(AuditConfig, values)


def _prepare_out(out: Path, identity: dict[str, object], overwrite: bool) -> None:
    """Refuse an --out that holds another configuration's results unless --overwrite; resume a matching one."""
    marker = out / IDENTITY
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous != identity:
            if not overwrite:
                raise UserInputError(f"--out {out}: holds results of a different configuration; "
                                     "pass --overwrite to replace them, or choose another directory")
            shutil.rmtree(out / ITEMS, ignore_errors=True)
    elif out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out}: exists and is not a directory")
    elif out.exists() and any(out.iterdir()) and not overwrite and not (out / ITEMS).exists():
        raise UserInputError(f"--out {out}: exists and is not a realize audit directory; pass --overwrite or "
                             "choose another directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(marker, json.dumps(identity, indent=2, sort_keys=True) + "\n")
    except OSError as err:
        raise UserInputError(f"--out {out}: cannot write there ({err.strerror or err})") from None


def _progress_line(rank: int, world: int) -> Callable[[VectorAudit], None]:
    prefix = f"[process {rank}/{world}] " if world > 1 else ""

    def show(audit: VectorAudit) -> None:
        values = []
        if "activation" in audit.axes:
            values.append(f"test specific cos {audit.best.specific_cos:.2f}" if audit.best
                          else "no natural-enough prompt (activation)")
        if audit.behavior is not None:
            values.append(f"test recovery {audit.behavior.best.recovery:.2f}" if audit.behavior.best
                          else "no natural-enough prompt (behavior)")
        best = ", ".join(values)
        name = printable(audit.name, limit=200)
        print(f"{prefix}finished {audit.kind} {name}: {best} ({audit.seconds:.0f} s)", flush=True)

    return show


def _run(args: argparse.Namespace) -> int:
    """Plan the items; audit the pending ones, split across processes when launched with `accelerate launch` or
    `torchrun`; the main process then merges every item into the outputs."""
    if not args.vectors and not args.demo:
        raise UserInputError("no vectors: pass VECTOR_FILE... or --demo")
    config = _config(args)
    out = Path(args.out)
    state = process_state()
    lm = load_model_arg(args)
    vectors: list[SteeringVector] = []
    for path in args.vectors:
        loaded = load_vectors_arg(path, args, lm)
        for vector in loaded:
            require_scale(vector, path)
        vectors += loaded
    identity = {"model": lm.name, "config": json.loads(json.dumps(config.key(), default=str)),
                "placement": args.placement}
    demo_file = out / "demo_vectors.safetensors"
    if state.is_main_process:
        _prepare_out(out, identity, args.overwrite)
        if args.demo and not demo_file.is_file():
            steps = 40 if args.budget == "quick" else 100
            melbo = MelboConfig(n_vectors=2, steps=steps, seed=args.seed, show_progress=not args.quiet)
            save_safetensors(train_melbo(lm, DEMO_PROMPTS, melbo), demo_file)
    state.wait_for_everyone()
    if args.demo:
        vectors += load_vectors_arg(str(demo_file), args, lm)
    store = ItemStore(out / ITEMS)
    cache = None if args.no_control_cache else ItemStore(Path(args.control_cache) if args.control_cache
                                                         else cache_root() / "controls")
    plan = plan_audit(lm, vectors, config)
    pending = [t for t in plan.targets if lookup(t, store, cache) is None]
    if state.is_main_process:
        write_plan(out, plan.targets)
        print(f"{len(plan.targets)} items ({len(plan.targets) - len(pending)} already done), "
              f"{state.num_processes} process(es)", flush=True)
    state.wait_for_everyone()  # every process has its pending list before anyone writes an item
    shard_config = dataclasses.replace(config, show_progress=config.show_progress and state.is_main_process)
    with state.split_between_processes(balanced(pending, state.num_processes)) as mine:
        audit_shard(plan, mine, shard_config, store, control_cache=cache,
                    on_item=_progress_line(state.process_index, state.num_processes))
    state.wait_for_everyone()
    if not state.is_main_process:
        return 0
    judged, paths = merge_directory(out)
    for j in [j for j in judged if j.audit.kind == "vector"] + [j for j in judged if j.audit.kind != "vector"]:
        print(("" if j.audit.kind == "vector" else "  control ") + summary_line(j))
    print(f"report: {paths['report']}\nresults: {paths['results']}\ndataset: {paths['dataset']}")
    return 0
