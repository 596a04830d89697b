"""Per-item audit results on disk: one JSON file per finished target, written atomically.

A run killed mid-way keeps every finished item; rerunning the same command skips them. Reading is strict: a file
written by another version (`STORE_VERSION`), missing a field the code needs or holding one it does not know, or
that cannot be read back (a crash of an older version, a disk error), is reported with a log line and its item is
recomputed, never read with a default standing in for what was not stored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from realize.data.atomic import write_text_atomic
from realize.evidence import (
    ActivationScore, AxisEvidence, BehaviorFacts, BehaviorScore, Generation, Hypothesis, Measured, Score, VectorAudit,
)
from realize.magnitude import Magnitude
from realize.resampling import AnyEvidence, ContextEvidence, FormEvidence, LayersEvidence, RatioEvidence

logger = logging.getLogger(__name__)
STORE_VERSION = 8

_SCORES: dict[str, type] = {"activation": ActivationScore, "behavior": BehaviorScore}


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the frozen dataclasses hold (recursively)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _make(cls: type, raw: Mapping[str, Any]) -> Any:
    """`cls(**raw)` with lists as tuples; a missing or unknown field raises (the item is then recomputed)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {unknown}")
    return cls(**{k: _tuples(v) for k, v in raw.items()})


def _evidence_to(evidence: AnyEvidence) -> dict[str, Any]:
    if isinstance(evidence, LayersEvidence):
        return {"type": "layers", "parts": [_evidence_to(p) for p in evidence.parts]}
    kind = "context" if isinstance(evidence, ContextEvidence) else "ratio"
    return {"type": kind, **dataclasses.asdict(evidence)}


def _evidence_from(raw: Mapping[str, Any]) -> AnyEvidence:
    fields = {k: v for k, v in raw.items() if k != "type"}
    if raw["type"] == "layers":
        return LayersEvidence(tuple(_context(p) for p in raw["parts"]))
    if raw["type"] == "context":
        return _make(ContextEvidence, fields)
    if raw["type"] == "ratio":
        return _make(RatioEvidence, fields)
    raise ValueError(f"evidence type {raw['type']!r}")


def _context(raw: Mapping[str, Any]) -> ContextEvidence:
    if raw.get("type") != "context":
        raise ValueError("layers evidence: expected context parts")
    return _make(ContextEvidence, {k: v for k, v in raw.items() if k != "type"})


def _score_to(score: Score | None) -> dict[str, Any] | None:
    if score is None:
        return None
    return {"type": "activation" if isinstance(score, ActivationScore) else "behavior", **dataclasses.asdict(score)}


def _score_from(raw: Mapping[str, Any] | None) -> Score | None:
    if raw is None:
        return None
    return _make(_SCORES[raw["type"]], {k: v for k, v in raw.items() if k != "type"})


def _measured_to(m: Measured | None) -> dict[str, Any] | None:
    if m is None:
        return None
    content = None if m.content_evidence is None else _evidence_to(m.content_evidence)
    return {"score": _score_to(m.score), "evidence": _evidence_to(m.evidence), "content_evidence": content}


def _measured_from(raw: Mapping[str, Any] | None) -> Measured | None:
    if raw is None:
        return None
    score = _score_from(raw["score"])
    assert score is not None
    content = raw["content_evidence"]
    return Measured(score, _evidence_from(raw["evidence"]), None if content is None else _evidence_from(content))


def _facts_to(facts: BehaviorFacts | None) -> dict[str, Any] | None:
    if facts is None:
        return None
    return {**dataclasses.asdict(facts), "activation_prompt": _score_to(facts.activation_prompt)}


def _facts_from(raw: Mapping[str, Any] | None) -> BehaviorFacts | None:
    if raw is None:
        return None
    fields = dict(raw)
    fields["generations"] = [Generation(**g) for g in raw["generations"]]
    fields["activation_prompt"] = _score_from(raw["activation_prompt"])
    return _make(BehaviorFacts, fields)


def _axis_to(axis: AxisEvidence) -> dict[str, Any]:
    return {
        "axis": axis.axis, "frontier": [_score_to(s) for s in axis.frontier], "best": _measured_to(axis.best),
        "best_corpus": _score_to(axis.best_corpus), "best_search_alone": _score_to(axis.best_search_alone),
        "siblings": [_measured_to(s) for s in axis.siblings], "unrelated": _measured_to(axis.unrelated),
        "true_prompt": _measured_to(axis.true_prompt), "true_siblings": [_measured_to(s) for s in axis.true_siblings],
        "behavior": _facts_to(axis.behavior),
        "hypotheses": [{"measured": _measured_to(h.measured), "siblings": [_measured_to(s) for s in h.siblings],
                        "form": _form_to(h.form)} for h in axis.hypotheses],
        "form": _form_to(axis.form), "true_form": _form_to(axis.true_form),
    }


def _form_to(form: FormEvidence | None) -> dict[str, Any] | None:
    return None if form is None else dataclasses.asdict(form)


def _form_from(raw: Mapping[str, Any] | None) -> FormEvidence | None:
    return None if raw is None else _make(FormEvidence, raw)


def _axis_from(raw: Mapping[str, Any]) -> AxisEvidence:
    names = {f.name for f in dataclasses.fields(AxisEvidence)}
    if set(raw) != names:
        raise ValueError(f"axis evidence: fields {sorted(set(raw) ^ names)} missing or unknown")
    frontier = tuple(s for s in (_score_from(x) for x in raw["frontier"]) if s is not None)
    return AxisEvidence(
        axis=raw["axis"], frontier=frontier,
        best=_measured_from(raw["best"]), best_corpus=_score_from(raw["best_corpus"]),
        best_search_alone=_score_from(raw["best_search_alone"]),
        siblings=tuple(m for m in (_measured_from(s) for s in raw["siblings"]) if m is not None),
        unrelated=_measured_from(raw["unrelated"]), true_prompt=_measured_from(raw["true_prompt"]),
        true_siblings=tuple(m for m in (_measured_from(s) for s in raw["true_siblings"]) if m is not None),
        behavior=_facts_from(raw["behavior"]),
        hypotheses=tuple(_hypothesis_from(h) for h in raw["hypotheses"]),
        form=_form_from(raw["form"]), true_form=_form_from(raw["true_form"]),
    )


def _hypothesis_from(raw: Mapping[str, Any]) -> Hypothesis:
    measured = _measured_from(raw["measured"])
    if measured is None:
        raise ValueError("hypothesis: no measurement")
    return Hypothesis(measured, tuple(m for m in (_measured_from(s) for s in raw["siblings"]) if m is not None),
                      _form_from(raw["form"]))


def to_dict(audit: VectorAudit) -> dict[str, Any]:
    out = {f.name: getattr(audit, f.name) for f in dataclasses.fields(audit)}
    out["magnitude"] = dataclasses.asdict(audit.magnitude)
    out["axes"] = {name: _axis_to(axis) for name, axis in audit.axes.items()}
    out["manifold"] = dict(audit.manifold)
    return {"store_version": STORE_VERSION, **out}


def from_dict(raw: Mapping[str, Any]) -> VectorAudit:
    if raw.get("store_version") != STORE_VERSION:
        raise ValueError(f"store_version {raw.get('store_version')!r}, expected {STORE_VERSION}")
    fields = {k: v for k, v in raw.items() if k != "store_version"}
    fields["magnitude"] = _make(Magnitude, fields["magnitude"])
    fields["axes"] = {name: _axis_from(axis) for name, axis in fields["axes"].items()}
    fields["manifold"] = dict(fields["manifold"])
    return _make(VectorAudit, fields)


class ItemStore:
    """Finished items under one directory (`<dir>/<id>.json`)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def load(self, key: str) -> VectorAudit | None:
        """The stored item, or None when absent or not readable by this version (logged; the caller recomputes)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, AssertionError) as err:
            logger.warning("%s: item not readable by this version (%s); recomputing it", path, err)
            return None

    def save(self, audit: VectorAudit) -> None:
        write_text_atomic(self.path(audit.vector_id), json.dumps(to_dict(audit), allow_nan=True))
