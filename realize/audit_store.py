"""Per-item audit results on disk: one JSON file per finished target, written atomically.

A run killed mid-way keeps every finished item; rerunning the same command skips them. A file that cannot be read
back (a crash of an older version, a disk error) is reported and its item recomputed, never silently dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from realize.data.atomic import write_text_atomic
from realize.audit_types import Generation, PromptScore, VectorAudit
from realize.verdict import Calibration

logger = logging.getLogger(__name__)
STORE_VERSION = 1


def item_id(kind: str, direction: torch.Tensor, layer: int, scale: float, key: Mapping[str, Any]) -> str:
    """Stable id of a work item: hash of the vector bytes, its layer/scale, and the audit configuration."""
    digest = hashlib.sha256()
    digest.update(direction.detach().to(torch.float32).contiguous().numpy().tobytes())
    digest.update(json.dumps({"kind": kind, "layer": layer, "scale": scale, **key}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _score(raw: Mapping[str, Any] | None) -> PromptScore | None:
    if raw is None:
        return None
    return PromptScore(**{**raw, "ids": tuple(raw["ids"]), "per_context_cos": tuple(raw["per_context_cos"])})


def _pair(raw: Any) -> tuple[float, float] | None:
    return None if raw is None else (float(raw[0]), float(raw[1]))


def to_dict(audit: VectorAudit) -> dict[str, Any]:
    return {"store_version": STORE_VERSION, **dataclasses.asdict(audit)}


def from_dict(raw: Mapping[str, Any]) -> VectorAudit:
    if raw.get("store_version") != STORE_VERSION:
        raise ValueError(f"store_version {raw.get('store_version')!r}, expected {STORE_VERSION}")
    fields = {k: v for k, v in raw.items() if k != "store_version"}
    return VectorAudit(
        **{
            **fields,
            "frontier": tuple(_score(s) for s in fields["frontier"]),
            "best": _score(fields["best"]),
            "best_unrelated": _score(fields["best_unrelated"]),
            "calibration": Calibration(**fields["calibration"]) if fields["calibration"] else None,
            "interval": _pair(fields["interval"]),
            "specific_interval": _pair(fields["specific_interval"]),
            "behavior_interval": _pair(fields["behavior_interval"]),
            "generations": tuple(Generation(**g) for g in fields["generations"]),
        }
    )


class ItemStore:
    """Finished items under one directory (`<dir>/<id>.json`)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def load(self, key: str) -> VectorAudit | None:
        """The stored item, or None when absent or unreadable (logged; the caller recomputes it)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning("%s: unreadable item (%s); recomputing it", path, err)
            return None

    def save(self, audit: VectorAudit) -> None:
        write_text_atomic(self.path(audit.vector_id), json.dumps(to_dict(audit), allow_nan=True))
