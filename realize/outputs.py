"""An audit directory and the outputs built from it: results.parquet/jsonl, the dataset, report.html.

A directory holds `audit.json` (the `AuditIdentity`: model, digests, the typed configuration; a rerun must match it
to resume), `plan.json` (the planned work items, in order) and `items/` (one finished item per file).
`merge_directory(DIR)` rebuilds every output from those alone (`realize merge DIR`); a live run writes the same
outputs from the same stored items without re-reading its configuration.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realize.config import AuditConfig
from realize.data.atomic import write_text_atomic
from realize.data.errors import UserInputError, arg
from realize.data.results_dataset import export_dataset, write_rows
from realize.data.safe_text import printable
from realize.evidence import (
    ActivationScore, Axis, BehaviorScore, Judgement, JudgedAudit, Measured, Score, VectorAudit,
)
from realize.identity import AuditIdentity
from realize.judging import judge_all
from realize.report import render_report, write_report
from realize.store import ItemStore
from realize.targets import Target

if TYPE_CHECKING:
    import pandas

NAN = float("nan")
IDENTITY, PLAN, ITEMS = "audit.json", "plan.json", "items"


def _num(x: float | None) -> float:
    return NAN if x is None else float(x)


_ACTIVATION = ("selection_specific_cos", "cos_test", "specific_cos_test", "per_position_cos", "norm_ratio", "fve",
               "behavior_recovery")
_TEST_VALUE: dict[Axis, str] = {"activation": "test specific cos", "behavior": "test recovery"}
_BEHAVIOR = ("selection_recovery", "recovery_test", "direction_cos", "effect_ratio", "effect_kl")


def _axis_columns(score: ActivationScore | BehaviorScore, audit: VectorAudit, is_best: bool) -> dict[str, Any]:
    if isinstance(score, ActivationScore):
        behavior = audit.axes.get("behavior")
        facts = behavior.behavior if behavior is not None else None
        measured = facts.activation_prompt if is_best and facts is not None else None
        return {**dict.fromkeys(_BEHAVIOR, NAN), "selection_specific_cos": score.selection, "cos_test": score.cos,
                "specific_cos_test": score.value, "per_position_cos": score.per_position_cos,
                "norm_ratio": score.norm_ratio, "fve": score.fve,
                "per_layer_specific_cos": [x[2] for x in score.per_layer],
                "behavior_recovery": _num(measured.value if measured is not None else None)}
    facts = audit.axes["behavior"].behavior
    return {**dict.fromkeys(_ACTIVATION, NAN), "per_layer_specific_cos": [], "selection_recovery": score.selection,
            "recovery_test": score.value, "direction_cos": score.direction_cos, "effect_ratio": score.effect_ratio,
            "effect_kl": _num(facts.effect if facts is not None else None)}


def _judgement_columns(judgement: Judgement, unrelated: Measured | None) -> dict[str, Any]:
    """The columns one judgement fills (the item's, or a suspected prompt's judged as if it were the best)."""
    cal, interval, content = judgement.calibration, judgement.score_interval, judgement.content
    return {
        "verdict": judgement.verdict, "direction_verdict": judgement.direction,
        "content": content.outcome if content else "", "content_margin": _num(content.margin if content else None),
        "true_content_margin": _num(content.true_margin if content else None),
        "content_cosine": _num(content.cosine if content else None),
        "true_content_cosine": _num(content.true_cosine if content else None),
        "unrelated_value": _num(unrelated.score.value if unrelated else None),
        "verdict_stability": judgement.stability, "null_percentile": cal.null_percentile if cal else NAN,
        "realizability_score": cal.score if cal else NAN, "score_low": interval[0] if interval else NAN,
        "score_high": interval[1] if interval else NAN,
    }


def _prompt_columns(score: Score, audit: VectorAudit, is_best: bool) -> dict[str, Any]:
    return {"attack": score.attack, "prompt": score.prompt, "prompt_ids": list(score.ids), "is_best": is_best,
            "perplexity": score.perplexity, "worst_window_perplexity": score.worst_window_perplexity,
            "realism": score.realism, **_axis_columns(score, audit, is_best)}


def audit_rows(judged: JudgedAudit, identity: AuditIdentity) -> list[dict[str, Any]]:
    """One row per evaluated prompt of one item and axis (the verdict's prompt flagged `is_best`), then one per
    suspected prompt (attack "hypothesis"), whose verdict columns are its own judgement's."""
    audit, config = judged.audit, identity.config
    rows = []
    for axis, judgement in judged.judgements.items():
        evidence = audit.axes[axis]
        common = {
            "vector_id": audit.vector_id, "vector_name": audit.name, "source_file": audit.source,
            "source_sha256": audit.source_sha256 or "", "kind": audit.kind, "axis": axis, "model": identity.model,
            "model_sha256": identity.model_file_sha256 or "", "realize_version": identity.realize_version,
            "source_digest": identity.source, "layer": audit.layer, "layers": list(audit.layers),
            "scale": audit.scale, "target_norm": audit.target_norm, "strength": list(audit.strength),
            "method": audit.method, "magnitude_factor": audit.magnitude.factor,
            "realizable_scale": audit.magnitude.realizable_scale, "seed": config.seed, "budget": config.budget,
            "seconds": audit.seconds,
        }
        own = _judgement_columns(judgement, evidence.unrelated)
        best_ids = evidence.best.score.ids if evidence.best is not None else None
        for i, score in enumerate(evidence.frontier):
            is_best = score.ids == best_ids
            rows.append({**common, **own, **_prompt_columns(score, audit, is_best),
                         "prompt_verdict": judgement.prompt_verdicts[i]})
        for hypothesis, verdict in zip(evidence.hypotheses, judgement.hypotheses, strict=True):
            rows.append({**common, **_judgement_columns(verdict, evidence.unrelated),
                         **_prompt_columns(hypothesis.measured.score, audit, False), "prompt_verdict": verdict.verdict})
    return rows


@dataclass(frozen=True)
class AuditReport:
    """A judged audit: every vector and control with its evidence and verdicts, and what it is the result of."""

    items: tuple[JudgedAudit, ...]
    identity: AuditIdentity

    @property
    def model(self) -> str:
        return self.identity.model

    @property
    def config(self) -> AuditConfig:
        return self.identity.config

    @property
    def vectors(self) -> tuple[JudgedAudit, ...]:
        """The audited vectors (controls excluded)."""
        return tuple(j for j in self.items if j.audit.kind == "vector")

    def verdicts_on(self, axis: Axis) -> dict[str, str]:
        """Vector name -> verdict on `axis`."""
        return {j.audit.name: v.verdict for j in self.vectors if (v := j.judgement(axis)) is not None}

    @property
    def verdicts(self) -> dict[str, str]:
        """Vector name -> activation verdict (can a prompt produce its shift?)."""
        return self.verdicts_on("activation")

    @property
    def behavior_verdicts(self) -> dict[str, str]:
        """Vector name -> behavior verdict (can a prompt make the model do what it does?)."""
        return self.verdicts_on("behavior")

    def rows(self) -> list[dict[str, Any]]:
        """One results row per (item, axis, evaluated prompt) (`realize.data.results_dataset.FEATURES`)."""
        return [r for j in self.items for r in audit_rows(j, self.identity)]

    def to_pandas(self) -> pandas.DataFrame:
        import pandas

        from realize.data.results_dataset import COLUMNS

        return pandas.DataFrame(self.rows(), columns=list(COLUMNS))

    def save(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        """Write results.parquet/jsonl, the dataset of realizable steers and report.html; returns their paths."""
        return write_outputs(self.items, directory, self.identity)


def write_outputs(judged: Sequence[JudgedAudit], out_dir: str | os.PathLike[str],
                  identity: AuditIdentity) -> dict[str, Path]:
    """Write results, the dataset of realizable steers and the report; returns their paths."""
    out = Path(out_dir)
    rows = [r for j in judged for r in audit_rows(j, identity)]
    parquet = write_rows(rows, out)
    dataset = out / "dataset"
    export_dataset(rows, dataset, provenance=identity.provenance())
    ordered = [j for j in judged if j.audit.kind == "vector"] + [j for j in judged if j.audit.kind != "vector"]
    report = out / "report.html"
    config = identity.config
    settings = (f"budget {config.budget} · placement {config.placement} · seed {config.seed} · "
                f"{identity.provenance()}")
    write_report(report, render_report(ordered, title="realize audit", settings=settings))
    return {"results": parquet, "dataset": dataset, "report": report}


def _prompt_note(judged: JudgedAudit, axis: Axis) -> str:
    best = judged.audit.axes[axis].best
    if best is None:
        return "none"
    what = _TEST_VALUE[axis]
    return (f'"{printable(best.score.prompt, limit=120)}" ({what} {best.score.value:.2f}, realism '
            f"{best.score.realism:.2f})")


def _hypothesis_notes(judged: JudgedAudit, axis: Axis) -> list[str]:
    what = _TEST_VALUE[axis]
    notes = []
    for h, j in zip(judged.audit.axes[axis].hypotheses, judged.judgements[axis].hypotheses, strict=True):
        score = h.measured.score
        notes.append(f'  your prompt "{printable(score.prompt, limit=120)}" ({what} {score.value:.2f}, realism '
                     f"{score.realism:.2f}): {j.verdict} (stability {j.stability:.2f}) - {j.reason}")
    return notes


def summary_line(judged: JudgedAudit) -> str:
    """Per item for the terminal: each axis's verdict, why, and the prompt it rests on; then each prompt the user
    suspected, judged the same way."""
    parts = []
    for axis, j in judged.judgements.items():
        parts.append(f"{axis}: {j.verdict} (stability {j.stability:.2f}) - {j.reason}; best prompt "
                     f"{_prompt_note(judged, axis)}")
        parts += _hypothesis_notes(judged, axis)
    return f"{printable(judged.audit.name, limit=200)}:\n    " + "\n    ".join(parts)


def time_left(finished: Sequence[VectorAudit], remaining_kinds: Sequence[str]) -> float | None:
    """Seconds the remaining items (their kinds, in any order) need at the pace of the finished ones: each kind at
    its own mean item time, a kind not finished yet at the mean of all. None before any item has finished."""
    if not finished:
        return None
    by_kind: dict[str, list[float]] = {}
    for audit in finished:
        by_kind.setdefault(audit.kind, []).append(audit.seconds)
    overall = sum(a.seconds for a in finished) / len(finished)
    means = {kind: sum(v) / len(v) for kind, v in by_kind.items()}
    return sum(means.get(kind, overall) for kind in remaining_kinds)


def duration_text(seconds: float) -> str:
    """"45 s", "12 min", "3.4 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def progress_line(audit: VectorAudit, left: float | None = None, remaining: int = 0) -> str:
    """One line per finished item: its best value on each axis; with `left`, the `remaining` items' estimated time."""
    values = []
    for axis, evidence in audit.axes.items():
        what = _TEST_VALUE[axis]
        values.append(f"{what} {evidence.value:.2f}" if evidence.value is not None
                      else f"no natural-enough prompt ({axis})")
    line = f"finished {audit.kind} {printable(audit.name, limit=200)}: {', '.join(values)} ({audit.seconds:.0f} s)"
    if left is not None and remaining:
        line += f"; {remaining} to go, about {duration_text(left)} at this pace"
    return line


def prepare_directory(out: Path, identity: AuditIdentity, overwrite: bool) -> None:
    """Refuse an `out` that holds another audit's results unless `overwrite`; resume a matching one
    (`AuditIdentity.resumes`: a change to the judging code alone resumes); write `audit.json` (atomically)."""
    marker = out / IDENTITY
    here = identity.to_json()
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if not isinstance(previous, dict) or not identity.resumes(previous):
            if not overwrite:
                raise UserInputError(f"{arg('out')} {out}: holds results of a different audit (model, code or "
                                     f"configuration); pass {arg('overwrite')} to replace them, or choose another "
                                     "directory")
            shutil.rmtree(out / ITEMS, ignore_errors=True)
    elif out.exists() and not out.is_dir():
        raise UserInputError(f"{arg('out')} {out}: exists and is not a directory")
    elif out.exists() and any(out.iterdir()) and not overwrite and not (out / ITEMS).exists():
        raise UserInputError(f"{arg('out')} {out}: exists and is not a realize audit directory; pass "
                             f"{arg('overwrite')} or choose another directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(marker, json.dumps(here, indent=2, sort_keys=True) + "\n")
    except OSError as err:
        raise UserInputError(f"{arg('out')} {out}: cannot write there ({err.strerror or err})") from None


def write_plan(out_dir: str | os.PathLike[str], targets: Sequence[Target]) -> None:
    """Record the planned items (ids, kinds, names, layers) in `plan.json`, atomically."""
    items = [{"id": t.vector_id, "kind": t.kind, "name": t.name, "layers": list(t.layers)} for t in targets]
    write_text_atomic(Path(out_dir) / PLAN, json.dumps({"items": items}, indent=1) + "\n")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"{path.parent}: no {path.name} here (not a `realize audit --out` directory)") from None
    except (OSError, ValueError) as err:
        raise UserInputError(f"{path}: unreadable ({err})") from None


def read_items(out_dir: str | os.PathLike[str], planned: Sequence[tuple[str, str]]) -> list[VectorAudit]:
    """The finished items (id, name) of a directory, in order; a UserInputError names the missing ones."""
    out = Path(out_dir)
    store = ItemStore(out / ITEMS)
    audits, missing = [], []
    for item_id, name in planned:
        found = store.load(item_id)
        (audits.append(found) if found is not None else missing.append(name))
    if missing:
        names = ", ".join(missing[:3])
        raise UserInputError(f"{out}: {len(missing)} of {len(planned)} planned items are not finished ({names}"
                             f"{', ...' if len(missing) > 3 else ''}); rerun the same `realize audit` command")
    return audits


def merge_directory(out_dir: str | os.PathLike[str]) -> tuple[AuditReport, dict[str, Path]]:
    """Judge every planned item of an audit directory and write results, dataset and report."""
    out = Path(out_dir)
    raw_identity, plan = _read_json(out / IDENTITY), _read_json(out / PLAN)
    try:
        identity = AuditIdentity.from_json(raw_identity)
        planned = [(str(item["id"]), str(item["name"])) for item in plan["items"]]
    except (KeyError, TypeError, ValueError) as err:
        raise UserInputError(f"{out}: {IDENTITY} or {PLAN} is malformed or from another version ({err})") from None
    judged = judge_all(read_items(out, planned), identity.config.thresholds, seed=identity.config.seed)
    report = AuditReport(tuple(judged), identity)
    return report, report.save(out)

