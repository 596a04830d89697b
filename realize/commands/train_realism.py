"""`realize train-realism`: rebuild the realism classifier's weights and print its held-out metrics.

The pipeline lives in `realize.scorers.realism` (dataset -> features -> train -> evaluate); this command maps flags
onto its configs and prints. It builds the dataset (deterministic given --seed; naturals and benign task prompts
split by cluster, corruptions and suffixes follow their parent's split), extracts features with the embedded model
and the judge (Gemma-3-270M; `--no-judge` leaves it out), fits on train, calibrates and picks the threshold and
the "unverified" band on validation, and evaluates on test (`realism.evaluate`: per negative kind and generator
family held out, benign prompts passing). Two classifiers are trained on the same rows: the shipped one
(`scorers/weights/realism.json`, every feature) and a judge-free one (`realism_fast.json`). `--features v2` trains
on the feature set of version 2 (no turn features), for comparisons. Writes the weights atomically; `--report` also
writes the metrics as JSON. Same seed and token-statistics cache -> same weights.
"""

from __future__ import annotations

import argparse
import json
import logging

from realize.commands.common import add_model_argument, build_config
from realize.data.atomic import write_text_atomic
from realize.data.errors import UserInputError
from realize.data.models import load_model
from realize.scorers.realism.dataset import RealismDatasetConfig
from realize.scorers.realism.evaluate import fit_and_evaluate, print_report
from realize.scorers.realism.features import (
    ALL_FEATURE_NAMES,
    FEATURE_NAMES,
    V2_ALL_FEATURE_NAMES,
    V2_FEATURE_NAMES,
)
from realize.scorers.realism.model import (
    DEFAULT_WEIGHTS,
    FAST_WEIGHTS,
    JUDGE_MODEL,
    WEIGHTS_DIR,
    load_judge,
    save_classifier,
)
from realize.scorers.realism.sources import BENIGN_PATH, NEGATIVES_DIR
from realize.scorers.realism.train import RealismTrainConfig, prepare

logger = logging.getLogger(__name__)

DEFAULT_MINED = WEIGHTS_DIR / "realism_mined.jsonl"
DEFAULT_READER_LABELS = WEIGHTS_DIR / "realism_reader_labels.jsonl"  # near-natural corruptions, read one by one
PREVIOUS_WEIGHTS = WEIGHTS_DIR / "realism_v1.json"  # the classifier shipped before feature version 2
FEATURE_SETS = {"all": (ALL_FEATURE_NAMES, FEATURE_NAMES), "v2": (V2_ALL_FEATURE_NAMES, V2_FEATURE_NAMES)}


def _none(value: str) -> str | None:
    return None if value.lower() == "none" else value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-realism", help="rebuild the realism classifier and print held-out metrics")
    parser.add_argument("--out", default=str(DEFAULT_WEIGHTS), help=f"weights file (default {DEFAULT_WEIGHTS})")
    parser.add_argument("--seed", type=int, default=0, help="dataset and training seed (default 0)")
    parser.add_argument("--hidden", type=int, default=8, help="MLP hidden width (default 8); 0 = logistic regression")
    parser.add_argument("--mined", default=str(DEFAULT_MINED), help="hand-labelled mined search outputs (JSONL); "
                        "'none' to leave them out")
    parser.add_argument("--negatives", default=str(NEGATIVES_DIR), metavar="DIR",
                        help="generator families' outputs (<family>.jsonl; default the shipped ones); 'none' to "
                        "leave them out")
    parser.add_argument("--benign", default=str(BENIGN_PATH), metavar="JSONL",
                        help="benign task prompts (default the shipped ones); 'none' to leave them out")
    parser.add_argument("--features", choices=sorted(FEATURE_SETS), default="all",
                        help="feature set: all (version 3, default) or v2 (no turn features; for comparisons)")
    parser.add_argument("--reader-labels", default="none", metavar="JSONL",
                        help="reader labels of the near-natural corruptions (the shipped ones: "
                        f"{DEFAULT_READER_LABELS}); corruptions a reader judged still natural English are then not "
                        "negatives in training or evaluation (default none: every corruption is a negative)")
    parser.add_argument("--train-only-kinds", type=int, default=0, metavar="N",
                        help="add N corruptions of each train-only kind (other single-word edit families, trained "
                        "on, never held out; default 0)")
    parser.add_argument("--no-judge", action="store_true", help="leave out the Gemma judge's features")
    parser.add_argument("--fast-out", default=str(FAST_WEIGHTS), help="also write the judge-free classifier here "
                        f"(default {FAST_WEIGHTS}; 'none' to skip)")
    parser.add_argument("--runs", action="append", default=[], help="`realize optimize` JSON file/folder (test only)")
    parser.add_argument("--no-cache", action="store_true", help="recompute LM statistics instead of using the cache")
    parser.add_argument("--dry-run", action="store_true", help="print metrics, do not write the weights")
    parser.add_argument("--save-dataset", default=None, metavar="JSONL", help="also write the labelled dataset")
    parser.add_argument("--report", default=None, metavar="JSON", help="also write the metrics as JSON")
    add_model_argument(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.train_only_kinds < 0:  # checked before the (slow) model load
        raise UserInputError(f"--train-only-kinds: expected a count >= 0, got {args.train_only_kinds}")
    lm = load_model(args.model)
    judge = None if args.no_judge else load_judge(JUDGE_MODEL)
    dataset_config = build_config(RealismDatasetConfig, {
        "seed": args.seed, "optimizer_runs": tuple(args.runs), "mined_path": _none(args.mined),
        "reader_labels_path": _none(args.reader_labels), "n_per_train_only": args.train_only_kinds,
        "benign_path": _none(args.benign), "negatives_dir": _none(args.negatives)})
    train_config = build_config(RealismTrainConfig, {"seed": args.seed, "hidden": args.hidden})
    data = prepare(lm, dataset_config, judge=judge, use_cache=not args.no_cache, save_dataset=args.save_dataset)
    with_judge, without = FEATURE_SETS[args.features]
    outputs = [(with_judge if judge is not None else without, args.out)]
    if judge is not None and _none(args.fast_out):
        outputs.append((without, args.fast_out))  # the judge-free classifier, trained alongside
    reports = {}
    for names, out in outputs:
        model, report = fit_and_evaluate(data, names, train_config, model_name=lm.name, seed=args.seed,
                                         previous=PREVIOUS_WEIGHTS)
        title = "with the judge" if report["judge"] else "without a judge"
        print(f"== classifier {title} ({len(names)} features) -> {out}")
        print_report(report)
        reports[title] = report
        if not args.dry_run:
            save_classifier(model, out)
            print(f"wrote {out}")
    if args.report:
        write_text_atomic(args.report, json.dumps(reports, indent=1) + "\n")
    return 0
