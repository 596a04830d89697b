"""Helpers shared by subcommands: model/vector arguments, config building, atomic output."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from realize.data.atomic import write_text_atomic
from realize.data.errors import UserInputError
from realize.data.models import DEFAULT_MODEL, NAMED_MODELS, LoadedModel, load_model
from realize.data.vectors import SteeringVector, check_compatible, load_vectors

T = TypeVar("T")


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=DEFAULT_MODEL,
        help=f"HF directory, .gguf file, or a named model: {', '.join(NAMED_MODELS)} (default {DEFAULT_MODEL})"
    )


def add_vector_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layer", type=int, default=None, help="block index when the file does not say")
    parser.add_argument("--scale", type=float, default=None, help="coefficient a (steering adds a*v)")
    parser.add_argument("--trust-pickle", action="store_true", help="allow .pt files that need code to unpickle")
    parser.add_argument("--force", action="store_true", help="accept a vector whose model hint names another model")


def build_config(factory: Callable[..., T], values: dict[str, Any]) -> T:
    """Build a frozen config from CLI values; a validation ValueError becomes a UserInputError naming the flag."""
    try:
        return factory(**values)
    except ValueError as err:
        raise UserInputError(f"invalid option: {err}") from err


def load_model_arg(args: argparse.Namespace) -> LoadedModel:
    return load_model(args.model)


def load_vectors_arg(
    path: str, args: argparse.Namespace, lm: LoadedModel | None = None
) -> list[SteeringVector]:
    """Load every vector in `path` with --layer/--scale filling missing metadata; check them against the model."""
    vectors = load_vectors(path, layer=args.layer, scale=args.scale, trust_pickle=args.trust_pickle)
    if lm is not None:
        for vector in vectors:
            check_compatible(
                vector,
                hidden_size=lm.hidden_size,
                num_layers=lm.num_layers,
                model_name=lm.name,
                model_type=getattr(lm.model.config, "model_type", None),
                force=args.force,
            )
    return vectors


def require_scale(vector: SteeringVector, path: str) -> float:
    if vector.scale is None:
        raise UserInputError(f"{path}: the file has no scale; pass --scale")
    return float(vector.scale)


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> None:
    """Write JSON atomically (temp file beside `path`, then rename)."""
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
