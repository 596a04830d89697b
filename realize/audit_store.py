"""Per-item audit results on disk: one JSON file per finished target, written atomically.

A run killed mid-way keeps every finished item; rerunning the same command skips them. A file that cannot be read
back (a crash of an older version, a disk error) is reported and its item recomputed, never silently dropped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from realize.audit_types import BehaviorAxis, BehaviorScore, Generation, PromptScore, VectorAudit
from realize.data.atomic import write_text_atomic
from realize.verdict import ContextEvidence, LayersEvidence, Magnitude, MeanEvidence

logger = logging.getLogger(__name__)
STORE_VERSION = 4


def _score(raw: Mapping[str, Any] | None) -> PromptScore | None:
    if raw is None:
        return None
    return PromptScore(**{**raw, "ids": tuple(raw["ids"]), "per_context_cos": tuple(raw["per_context_cos"]),
                          "per_layer": tuple(tuple(r) for r in raw.get("per_layer", ()))})


def _pair(raw: Any) -> tuple[float, float] | None:
    return None if raw is None else (float(raw[0]), float(raw[1]))


def _bscore(raw: Mapping[str, Any] | None) -> BehaviorScore | None:
    if raw is None:
        return None
    return BehaviorScore(**{**raw, "ids": tuple(raw["ids"]), "per_context": tuple(raw["per_context"])})


def _behavior(raw: Mapping[str, Any] | None) -> BehaviorAxis | None:
    if raw is None:
        return None
    evidence = raw["evidence"]
    return BehaviorAxis(**{
        **raw,
        "frontier": tuple(_bscore(s) for s in raw["frontier"]),
        "best": _bscore(raw["best"]), "best_unrelated": _bscore(raw["best_unrelated"]),
        "activation_prompt": _bscore(raw["activation_prompt"]),
        "evidence": None if evidence is None else MeanEvidence(tuple(evidence["values"]), evidence["floor"]),
        "generations": tuple(Generation(**g) for g in raw["generations"]),
        "distill_losses": _pair(raw["distill_losses"]), "generic": _bscore(raw.get("generic")),
    })


def _context_evidence(raw: Mapping[str, Any]) -> ContextEvidence:
    return ContextEvidence(tuple(raw["dots"]), tuple(tuple(r) for r in raw["gram"]))


def to_dict(audit: VectorAudit) -> dict[str, Any]:
    return {"store_version": STORE_VERSION, **dataclasses.asdict(audit)}


def from_dict(raw: Mapping[str, Any]) -> VectorAudit:
    if raw.get("store_version") != STORE_VERSION:
        raise ValueError(f"store_version {raw.get('store_version')!r}, expected {STORE_VERSION}")
    fields = {k: v for k, v in raw.items() if k != "store_version"}
    evidence = fields["evidence"]
    if evidence is not None and "parts" in evidence:
        evidence = LayersEvidence(tuple(_context_evidence(p) for p in evidence["parts"]))
    elif evidence is not None:
        evidence = _context_evidence(evidence)
    return VectorAudit(
        **{
            **fields,
            "frontier": tuple(_score(s) for s in fields["frontier"]),
            "best": _score(fields["best"]),
            "best_unrelated": _score(fields["best_unrelated"]),
            "best_no_retrieval": _score(fields["best_no_retrieval"]),
            "evidence": evidence,
            "axes": tuple(fields["axes"]),
            "layers": tuple(fields["layers"]),
            "magnitude": Magnitude(**{**fields["magnitude"],
                                      "per_layer": tuple(tuple(r) for r in fields["magnitude"]["per_layer"])}),
            "behavior": _behavior(fields["behavior"]),
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
