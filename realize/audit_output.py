"""Turn finished audits into the output directory: results.parquet/jsonl, the dataset, report.html.

An audit directory holds `audit.json` (model and configuration: the identity a rerun must match), `plan.json` (the
planned work items, in order) and `items/` (one finished item per file). `merge_directory(DIR)` rebuilds every
output from those alone: what the main process does at the end of a (multi-process) run, and `realize merge DIR`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from realize.audit_store import ItemStore
from realize.audit_types import JudgedAudit
from realize.data.atomic import write_text_atomic
from realize.data.errors import UserInputError
from realize.data.results_dataset import export_dataset, write_rows
from realize.data.safe_text import printable
from realize.judging import judge_all
from realize.report import render_report, write_report
from realize.targets import Target
from realize.verdict import VerdictThresholds

NAN = float("nan")


def _num(x: float | None) -> float:
    return NAN if x is None else float(x)


def _common(judged: JudgedAudit, axis: str, *, model: str, seed: int, budget: str) -> dict[str, Any]:
    audit = judged.audit
    judgement = judged.activation if axis == "activation" else judged.behavior
    assert judgement is not None
    cal, interval = judgement.calibration, judgement.score_interval
    return {
        "vector_id": audit.vector_id, "vector_name": audit.name, "source_file": audit.source, "kind": audit.kind,
        "axis": axis, "model": model, "layer": audit.layer, "layers": list(audit.layers), "scale": audit.scale,
        "target_norm": audit.target_norm,
        "method": audit.method, "verdict": judgement.verdict, "direction_verdict": judgement.direction,
        "verdict_stability": judgement.stability, "null_percentile": cal.null_percentile if cal else NAN,
        "realizability_score": cal.score if cal else NAN, "score_low": interval[0] if interval else NAN,
        "score_high": interval[1] if interval else NAN, "magnitude_factor": audit.magnitude.factor,
        "realizable_scale": audit.magnitude.realizable_scale, "seed": seed, "budget": budget,
        "seconds": audit.seconds,
    }


_ACTIVATION_ONLY = ("selection_specific_cos", "cos_test", "specific_cos_test", "per_position_cos", "norm_ratio", "fve",
                    "behavior_recovery")
_BEHAVIOR_ONLY = ("selection_recovery", "recovery_test", "direction_cos", "effect_ratio", "effect_kl",
                  "generic_recovery", "specific_recovery")


def audit_rows(judged: JudgedAudit, *, model: str, seed: int, budget: str) -> list[dict[str, Any]]:
    """One row per evaluated prompt of one audit and axis (the verdict's prompt flagged `is_best`)."""
    audit = judged.audit
    rows = []
    if judged.activation is not None:
        common = _common(judged, "activation", model=model, seed=seed, budget=budget)
        activation_prompt = audit.behavior.activation_prompt if audit.behavior is not None else None
        for i, score in enumerate(audit.frontier):
            is_best = audit.best is not None and score.ids == audit.best.ids
            behavior = activation_prompt.recovery if is_best and activation_prompt is not None else None
            verdicts = judged.activation.prompt_verdicts
            rows.append({
                **common, **dict.fromkeys(_BEHAVIOR_ONLY, NAN), "attack": score.attack, "prompt": score.prompt,
                "prompt_ids": list(score.ids), "is_best": is_best,
                "prompt_verdict": verdicts[i] if i < len(verdicts) else "",
                "selection_specific_cos": score.selection_specific_cos, "cos_test": score.cos,
                "specific_cos_test": score.specific_cos, "per_position_cos": score.per_position_cos,
                "norm_ratio": score.norm_ratio, "fve": score.fve, "perplexity": score.perplexity,
                "per_layer_specific_cos": [x[2] for x in score.per_layer],
                "worst_window_perplexity": score.worst_window_perplexity, "realism": score.realism,
                "behavior_recovery": _num(behavior),
            })
    if judged.behavior is not None and audit.behavior is not None:
        common = _common(judged, "behavior", model=model, seed=seed, budget=budget)
        axis = audit.behavior
        verdicts = judged.behavior.prompt_verdicts
        for i, b in enumerate(axis.frontier):
            rows.append({
                **common, **dict.fromkeys(_ACTIVATION_ONLY, NAN), "per_layer_specific_cos": [],
                "attack": b.attack, "prompt": b.prompt,
                "prompt_ids": list(b.ids), "is_best": axis.best is not None and b.ids == axis.best.ids,
                "prompt_verdict": verdicts[i] if i < len(verdicts) else "",
                "selection_recovery": b.selection_recovery, "recovery_test": b.recovery,
                "direction_cos": b.direction_cos, "effect_ratio": b.effect_ratio, "effect_kl": axis.effect,
                "perplexity": b.perplexity, "worst_window_perplexity": b.worst_window_perplexity,
                "realism": b.realism, "generic_recovery": _num(axis.generic.recovery if axis.generic else None),
                "specific_recovery": _num(axis.specific(b)),
            })
    return rows


def write_outputs(
    judged: Sequence[JudgedAudit], out_dir: str | os.PathLike[str], *, model: str, seed: int, budget: str,
    settings: str,
) -> dict[str, Path]:
    """Write results, the dataset of realizable steers and the report; returns their paths."""
    out = Path(out_dir)
    rows = [r for j in judged for r in audit_rows(j, model=model, seed=seed, budget=budget)]
    parquet = write_rows(rows, out)
    dataset = out / "dataset"
    export_dataset(rows, dataset)
    ordered = [j for j in judged if j.audit.kind == "vector"] + [j for j in judged if j.audit.kind != "vector"]
    report = out / "report.html"
    write_report(report, render_report(ordered, title="realize audit", settings=settings))
    return {"results": parquet, "dataset": dataset, "report": report}


def summary_line(judged: JudgedAudit) -> str:
    """Per finished item for the terminal: each axis's verdict, why, and the prompt it rests on."""
    audit = judged.audit
    parts = []
    if judged.activation is not None:
        best = audit.best
        prompt = (f'"{printable(best.prompt, limit=120)}" (test specific cos {best.specific_cos:.2f}, realism '
                  f"{best.realism:.2f})" if best else "none")
        parts.append(f"activation: {judged.activation.verdict} (stability {judged.activation.stability:.2f}) - "
                     f"{judged.activation.reason}; best prompt {prompt}")
    if judged.behavior is not None and audit.behavior is not None:
        best_b = audit.behavior.best
        prompt = (f'"{printable(best_b.prompt, limit=120)}" (test recovery {best_b.recovery:.2f}, realism '
                  f"{best_b.realism:.2f})" if best_b else "none")
        parts.append(f"behavior: {judged.behavior.verdict} (stability {judged.behavior.stability:.2f}) - "
                     f"{judged.behavior.reason}; best prompt {prompt}")
    return f"{printable(audit.name, limit=200)}:\n    " + "\n    ".join(parts)


IDENTITY, PLAN, ITEMS = "audit.json", "plan.json", "items"


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


def merge_directory(out_dir: str | os.PathLike[str]) -> tuple[list[JudgedAudit], dict[str, Path]]:
    """Judge every planned item of an audit directory and write results, dataset and report. Raises a
    UserInputError naming the missing items when some are not finished (or unreadable)."""
    out = Path(out_dir)
    identity, plan = _read_json(out / IDENTITY), _read_json(out / PLAN)
    try:
        config, model, planned = identity["config"], identity["model"], list(plan["items"])
        thresholds = VerdictThresholds(**config["thresholds"])
    except (KeyError, TypeError, ValueError) as err:
        raise UserInputError(f"{out}: {IDENTITY} or {PLAN} is malformed ({err})") from None
    store = ItemStore(out / ITEMS)
    audits, missing = [], []
    for item in planned:
        found = store.load(str(item["id"]))
        (audits.append(found) if found is not None else missing.append(item))
    if missing:
        names = ", ".join(str(m["name"]) for m in missing[:3])
        raise UserInputError(f"{out}: {len(missing)} of {len(planned)} planned items are not finished ({names}"
                             f"{', ...' if len(missing) > 3 else ''}); rerun the same `realize audit` command")
    judged = judge_all(audits, thresholds, seed=int(config["seed"]))
    settings = (f"model {model} · budget {config['budget']} · placement {config['placement']} · "
                f"seed {config['seed']}")
    paths = write_outputs(judged, out, model=model, seed=config["seed"], budget=config["budget"], settings=settings)
    return judged, paths
