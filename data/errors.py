"""Errors a user can fix (the CLI prints them as one line and exits 2), and how messages name the caller's arguments.

Library code names an argument the way its caller wrote it: `arg("layer")` is `layer` for a Python caller and
`--layer` under the CLI, which wraps its work in `argument_names(CLI_FLAGS)`. A context variable carries the mapping,
so nothing is threaded through every call and nothing leaks between callers (it is reset in `finally`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

_PYTHON_NAMES: Mapping[str, str] = {"force": "force=True", "trust_pickle": "trust_pickle=True",
                                    "overwrite": "overwrite=True"}
CLI_FLAGS: Mapping[str, str] = {"layer": "--layer", "scale": "--scale", "force": "--force",
                                "trust_pickle": "--trust-pickle", "model": "--model", "placement": "--placement",
                                "out": "--out", "overwrite": "--overwrite"}
_NAMES: ContextVar[Mapping[str, str]] = ContextVar("realize_argument_names", default=_PYTHON_NAMES)


class UserInputError(ValueError):
    """A bad file, argument or configuration. The message names the file/argument and what was expected."""


def arg(name: str) -> str:
    """How the current caller spells argument `name` in messages (`layer` in Python, `--layer` in the CLI)."""
    names = _NAMES.get()
    return names.get(name, name)


@contextmanager
def argument_names(names: Mapping[str, str]) -> Iterator[None]:
    """Within the block, messages spell arguments as in `names` (the CLI passes `CLI_FLAGS`)."""
    token = _NAMES.set(names)
    try:
        yield
    finally:
        _NAMES.reset(token)
