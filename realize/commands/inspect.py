"""`realize inspect FILE...`: print what was loaded from vector files."""

from __future__ import annotations

import argparse

from realize.data.vectors import describe, load_vectors
from realize.commands.common import add_vector_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("inspect", help="show the vectors, layers, dims, norms and metadata in files")
    parser.add_argument("files", nargs="+", metavar="FILE", help=".safetensors, .pt/.pth, .gguf or .npy")
    add_vector_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    for path in args.files:
        vectors = load_vectors(path, layer=args.layer, scale=args.scale, trust_pickle=args.trust_pickle)
        print(f"{path}: {len(vectors)} vector(s)")
        print(describe(vectors))
    return 0
