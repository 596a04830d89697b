"""realize: can an ordinary prompt produce the same steer? A token-space realizability auditor for steering vectors.

    import realize

    report = realize.audit("vectors.safetensors", budget="quick")
    print(report.verdicts)
    report.to_pandas()

The public names below load lazily, so `import realize` (and importing any `realize.data` / `realize.attacks` /
`realize.scorers` module, which runs this file first) stays cheap and free of import cycles.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_PUBLIC = {
    "audit": "realize.api",
    "optimize": "realize.api",
    "OptimizeReport": "realize.api",
    "load_model": "realize.api",
    "load_vectors": "realize.api",
    "AuditReport": "realize.api",
    "AuditConfig": "realize.config",
    "VerdictThresholds": "realize.verdict",
    "SteeringVector": "realize.data.vectors",
    "UserInputError": "realize.data.errors",
}
__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:
    from realize.api import AuditReport, OptimizeReport, audit, load_model, load_vectors, optimize
    from realize.config import AuditConfig
    from realize.data.errors import UserInputError
    from realize.data.vectors import SteeringVector
    from realize.verdict import VerdictThresholds


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'realize' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
