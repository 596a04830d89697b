"""`realize audit VECTOR_FILES... [--demo] --out DIR`: calibrated verdicts, report, dataset of realizable steers."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from data.atomic import write_text_atomic
from data.errors import UserInputError
from data.vectors import SteeringVector, save_safetensors
from realize.audit import AuditConfig, run_audit
from realize.audit_output import summary_line, write_outputs
from realize.audit_search import BUDGETS
from realize.audit_store import ItemStore
from realize.commands.common import add_model_argument, add_vector_arguments, build_config, load_model_arg, load_vectors_arg
from realize.verdict import VerdictThresholds
from realize.vector_training import MelboConfig, train_melbo

DEMO_PROMPTS = ("Tell me a story about a dragon.", "What is the best way to learn a new language?")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("audit", help="audit vectors: calibrated verdict, HTML report, dataset")
    parser.add_argument("vectors", nargs="*", metavar="VECTOR_FILE", help="vector files (see `realize inspect`)")
    parser.add_argument("--demo", action="store_true", help="train two MELBO vectors and audit them")
    parser.add_argument("--out", default="runs/audit", help="output directory (default runs/audit)")
    parser.add_argument("--budget", choices=tuple(BUDGETS), default="default", help="search effort (default)")
    parser.add_argument("--placement", choices=("prefix", "suffix", "system"), default="prefix")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-null", type=int, help="random-direction controls (3)")
    parser.add_argument("--n-positive", type=int, help="natural-prompt controls (3)")
    parser.add_argument("--n-heldout", type=int, help="held-out contexts (8)")
    parser.add_argument("--behavior-tokens", type=int, help="tokens for behavior recovery, 0 = skip (24)")
    parser.add_argument("--min-realism", type=float, help="realism a prompt needs to count as natural (0.5)")
    parser.add_argument("--no-manifold", action="store_true", help="skip the on-manifold diagnostic")
    parser.add_argument("--overwrite", action="store_true", help="discard results of another configuration in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_argument(parser)
    add_vector_arguments(parser)
    parser.set_defaults(func=_run)


def _config(args: argparse.Namespace) -> AuditConfig:
    values: dict[str, object] = {"budget": args.budget, "placement": args.placement, "seed": args.seed,
                                 "manifold": not args.no_manifold, "show_progress": not args.quiet}
    for flag in ("n_null", "n_positive", "n_heldout", "behavior_tokens"):
        if getattr(args, flag) is not None:
            values[flag] = getattr(args, flag)
    if args.min_realism is not None:
        values["thresholds"] = build_config(VerdictThresholds, {"min_realism": args.min_realism})
    if args.budget == "quick":
        values.setdefault("n_null", 2)
        values.setdefault("n_positive", 2)
        values.setdefault("n_heldout", 6)
        values.setdefault("behavior_tokens", 16)
        values.setdefault("behavior_contexts", 2)
        values["n_opt_contexts"] = 6
    return build_config(AuditConfig, values)


def _prepare_out(out: Path, identity: dict[str, object], overwrite: bool) -> ItemStore:
    """Refuse an --out that holds another configuration's results unless --overwrite; resume a matching one."""
    marker = out / "audit.json"
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous != identity:
            if not overwrite:
                raise UserInputError(f"--out {out}: holds results of a different configuration; "
                                     "pass --overwrite to replace them, or choose another directory")
            shutil.rmtree(out / "items", ignore_errors=True)
    elif out.exists() and any(out.iterdir()) and not overwrite and not (out / "items").exists():
        raise UserInputError(f"--out {out}: exists and is not a realize audit directory; pass --overwrite or "
                             "choose another directory")
    write_text_atomic(marker, json.dumps(identity, indent=2, sort_keys=True) + "\n")
    return ItemStore(out / "items")


def _run(args: argparse.Namespace) -> int:
    if not args.vectors and not args.demo:
        raise UserInputError("no vectors: pass VECTOR_FILE... or --demo")
    config = _config(args)
    out = Path(args.out)
    lm = load_model_arg(args)
    vectors: list[SteeringVector] = []
    for path in args.vectors:
        vectors += load_vectors_arg(path, args, lm)
    identity = {"model": lm.name, "config": json.loads(json.dumps(config.key(), default=str)),
                "placement": args.placement}
    store = _prepare_out(out, identity, args.overwrite)
    if args.demo:
        demo_file = out / "demo_vectors.safetensors"
        if not demo_file.is_file():
            steps = 40 if args.budget == "quick" else 100
            melbo = MelboConfig(n_vectors=2, steps=steps, seed=args.seed, show_progress=not args.quiet)
            save_safetensors(train_melbo(lm, DEMO_PROMPTS, melbo), demo_file)
        vectors += load_vectors_arg(str(demo_file), args, lm)
    audits = run_audit(lm, vectors, config, store, on_done=lambda a: print(summary_line(a), flush=True))
    settings = f"model {lm.name} · budget {config.budget} · placement {config.placement} · seed {config.seed}"
    paths = write_outputs(audits, out, model=lm.name, seed=config.seed, budget=config.budget, settings=settings)
    for audit in audits:
        if audit.kind != "vector":
            print(f"  control {summary_line(audit)}")
    print(f"report: {paths['report']}\nresults: {paths['results']}\ndataset: {paths['dataset']}")
    return 0
