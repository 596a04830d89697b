"""`realize export DIR --out DATASET_DIR`: rebuild the dataset of realizable steers from an audit's results."""

from __future__ import annotations

import argparse
from pathlib import Path

from realize.data.errors import UserInputError
from realize.data.results_dataset import export_dataset, read_rows
from realize.verdict import VERDICTS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="write a Hugging Face dataset directory from audit results")
    parser.add_argument("audit_dir", metavar="DIR", help="an audit output directory (holds results.parquet)")
    parser.add_argument("--out", required=True, help="dataset directory to write")
    parser.add_argument("--verdict", action="append", choices=VERDICTS,
                        help="verdicts to keep (repeatable; default: realizable and partially realizable)")
    parser.add_argument("--include-positives", action="store_true",
                        help="also keep the positive controls' rows (held-out natural prompts' steers)")
    parser.add_argument("--include-null", action="store_true", help="also keep random-direction control rows")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    results = Path(args.audit_dir) / "results.parquet"
    if not results.is_file():
        raise UserInputError(f"{args.audit_dir}: no results.parquet here (run `realize audit --out DIR` first)")
    rows = read_rows(results)
    verdicts = tuple(args.verdict or ("realizable", "partially realizable"))
    kinds: tuple[str, ...] = ("vector", "positive", "behavior-positive") if args.include_positives else ("vector",)
    if args.include_null:
        kinds += ("null",)
    n = export_dataset(rows, args.out, verdicts=verdicts, kinds=kinds)
    print(f"wrote {n} row(s) ({', '.join(verdicts)}) to {args.out}")
    return 0
