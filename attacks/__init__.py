"""Token-space searches for a prompt that minimizes an objective (see `realize.attacks.base`).

`realize.attacks.ATTACKS` (name -> `AttackSpec(run, config, takes_init, needs_layout)`) is loaded on first use,
so importing one attack module does not import them all.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ATTACKS", "AttackSpec"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from realize.attacks import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
