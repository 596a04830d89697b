"""`realize audit VECTOR_FILES... [--demo] --out DIR`: calibrated verdicts, report, dataset of realizable steers.

Also runs under `accelerate launch [--num_processes N] -m realize audit ...` or `torchrun --nproc-per-node N -m
realize audit ...`: the pending items are split across the processes, each writes its finished items, the main
process merges (`realize merge DIR` does the same by hand)."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from realize.data.errors import UserInputError
from realize.data.models import cache_root
from realize.data.vectors import SteeringVector, save_safetensors
from realize.config import BUDGETS, PRESETS, AuditConfig
from realize.commands.common import (
    add_model_argument,
    add_vector_arguments,
    build_config,
    load_model_arg,
    load_vectors_arg,
    require_scale,
)
from realize.distributed import process_state
from realize.evidence import VectorAudit
from realize.identity import AuditIdentity
from realize.outputs import prepare_directory, progress_line, summary_line, time_left
from realize.pipeline import AuditPlan, run_audit
from realize.scorers.realism import load_classifier
from realize.store import ItemStore
from realize.vector_training import MelboConfig, train_melbo
from realize.verdict import CONTENT_REFERENCES, VerdictThresholds

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
    parser.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                        help="a prompt you suspect produces the steer (repeatable): measured on every vector and "
                        "axis with its own form siblings, judged by the same rules against the same controls, and "
                        "reported beside the search's best prompt")
    parser.add_argument("--min-realism", type=float, help="realism a prompt needs to count as natural (default: "
                        "the realism classifier's fitted threshold)")
    parser.add_argument("--realism-weights", metavar="FILE", help="realism classifier weights (default: the shipped "
                        "scorers/weights/realism.json, with the Gemma judge; scorers/weights/realism_fast.json is "
                        "judge-free). Item ids hash the classifier, so the shipped calibration is used only with "
                        "the default")
    parser.add_argument("--content-test", choices=CONTENT_REFERENCES, help="the form test's margin: the best "
                        "prompt over its form siblings' mean, or over the nearest sibling (every sibling beaten), for "
                        "the best prompt and the positives alike (default: "
                        f"{VerdictThresholds().content_reference}); a rerun on the same --out only judges again")
    parser.add_argument("--content-level", metavar="LEVEL", help="the form test also needs the best prompt's margin "
                        "over its siblings to exceed its one-sided bootstrap spread at this level, or 'off' (default: "
                        f"{VerdictThresholds().content_level}); a rerun on the same --out only judges again")
    parser.add_argument("--content-cosine", action="store_true", help="the form test (activation) also needs the "
                        "best prompt's content cosine against its siblings (what its words add to its form, against "
                        "what the steer adds) to reach half the positives' own prompts' median: a stricter, opt-in "
                        "test (README, 'A different question'); a rerun on the same --out only judges again")
    parser.add_argument("--no-manifold", action="store_true", help="skip the on-manifold diagnostic")
    parser.add_argument("--overwrite", action="store_true", help="discard results of another configuration in --out")
    parser.add_argument("--no-control-cache", action="store_true",
                        help="do not reuse calibration controls cached by earlier runs (under $REALIZE_CACHE)")
    parser.add_argument("--no-shipped-calibration", action="store_true",
                        help="compute every control, even those shipped with the package (realize/calibration/)")
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
                                 "axes": ("activation", "behavior") if args.axes == "both" else (args.axes,),
                                 "hypotheses": tuple(args.prompt)}
    for flag in ("n_null", "n_isotropic", "n_positive", "n_opt_contexts", "n_selection", "n_test", "behavior_tokens"):
        if getattr(args, flag) is not None:
            values[flag] = getattr(args, flag)
    thresholds: dict[str, object] = {name: value for name, value in (("min_realism", args.min_realism),
                                                                   ("content_reference", args.content_test))
                                     if value is not None}
    if args.content_level is not None:
        thresholds["content_level"] = _level(args.content_level)
    if args.content_cosine:
        thresholds["content_cosine"] = True
    if thresholds:
        values["thresholds"] = build_config(VerdictThresholds, thresholds)
    return build_config(AuditConfig, values)


def _level(text: str) -> float | None:
    """--content-level: a level, or 'off' (None)."""
    if text.strip().lower() == "off":
        return None
    try:
        return float(text)
    except ValueError:
        raise UserInputError(f"--content-level: expected a level in [0.5, 1) or 'off', got {text!r}") from None


def _run(args: argparse.Namespace) -> int:
    """Load the model and vectors (training the demo's MELBO vectors once); then the one pipeline
    (`realize.pipeline.run_audit`), its pending items split across processes when launched with `accelerate
    launch` or `torchrun`; the main process judges and writes the outputs, and prints the verdicts."""
    if not args.vectors and not args.demo:
        raise UserInputError("no vectors: pass VECTOR_FILE... or --demo")
    config = _config(args)
    classifier = load_classifier(args.realism_weights)  # a bad weights file fails before the model loads
    out = Path(args.out)
    state = process_state()
    lm = load_model_arg(args)
    vectors: list[SteeringVector] = []
    for path in args.vectors:
        loaded = load_vectors_arg(path, args, lm)
        for vector in loaded:
            require_scale(vector, path)
        vectors += loaded
    demo_file = out / "demo_vectors.safetensors"
    if args.demo:
        if state.is_main_process:  # the directory is checked before anything is written into it
            prepare_directory(out, AuditIdentity.of(lm, config, classifier), args.overwrite)
            if not demo_file.is_file():
                steps = 40 if args.budget == "quick" else 100
                melbo = MelboConfig(n_vectors=2, steps=steps, seed=args.seed, show_progress=not args.quiet)
                save_safetensors(train_melbo(lm, DEMO_PROMPTS, melbo), demo_file)
        state.wait_for_everyone()
        vectors += load_vectors_arg(str(demo_file), args, lm)
    cache = None if args.no_control_cache else ItemStore(Path(args.control_cache) if args.control_cache
                                                         else cache_root() / "controls")
    prefix = f"[process {state.process_index}/{state.num_processes}] " if state.num_processes > 1 else ""

    finished: list[VectorAudit] = []  # this process's items computed so far: their pace estimates the rest

    def planned(plan: AuditPlan, done: int) -> None:
        kinds = Counter(t.kind for t in plan.targets)
        parts = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items(), key=lambda kv: (kv[0] != "vector", kv[0])))
        print(f"{len(plan.targets)} items ({done} already done), {state.num_processes} process(es): {parts}",
              flush=True)

    def item_done(audit: VectorAudit, to_go: tuple[str, ...]) -> None:
        finished.append(audit)
        line = progress_line(audit, time_left(finished, to_go), len(to_go))
        print(prefix + line, flush=True)

    report = run_audit(lm, vectors, config, out, state=state, classifier=classifier, control_cache=cache,
                       overwrite=args.overwrite, on_plan=planned, shipped=not args.no_shipped_calibration,
                       on_item=item_done)
    if report is None:
        return 0
    for j in report.vectors + tuple(j for j in report.items if j.audit.kind != "vector"):
        print(("" if j.audit.kind == "vector" else "  control ") + summary_line(j))
    print(f"report: {out / 'report.html'}\nresults: {out / 'results.parquet'}\ndataset: {out / 'dataset'}")
    return 0
