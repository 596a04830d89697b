"""`realize merge DIR`: rebuild results, dataset and report of an audit directory from its finished items."""

from __future__ import annotations

import argparse

from realize.outputs import merge_directory, summary_line


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("merge", help="merge an audit directory's finished items into its outputs")
    parser.add_argument("audit_dir", metavar="DIR", help="a `realize audit --out` directory")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    report, paths = merge_directory(args.audit_dir)
    for j in report.vectors:
        print(summary_line(j))
    print(f"merged {len(report.items)} items\nreport: {paths['report']}\nresults: {paths['results']}\n"
          f"dataset: {paths['dataset']}")
    return 0
