"""`realize` command line: subcommands registered from `realize.commands.*`.

Errors a user can fix (UserInputError) print one line to stderr and exit 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from realize.data.errors import CLI_FLAGS, UserInputError, argument_names
from realize.data.safe_text import printable

# Each module exposes `register(subparsers)`; its subparser sets `func(args) -> int`.
COMMAND_MODULES = (
    "inspect",
    "train_vectors",
    "steer",
    "optimize",
    "audit",
    "merge",
    "export",
    "score",
    "behavior",
    "train_realism",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="realize",
        description="Token-space realizability auditor for steering vectors: can an ordinary prompt do the same?",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"realize.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    try:
        with argument_names(CLI_FLAGS):
            return int(args.func(args) or 0)
    except UserInputError as err:
        print(f"realize {args.command}: error: {printable(str(err))}", file=sys.stderr)
        return 2
    except OSError as err:  # an I/O failure not already turned into a UserInputError: one line, no traceback
        where = f"{err.filename}: " if err.filename else ""
        print(f"realize {args.command}: error: {printable(where + str(err.strerror or err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"realize {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
