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

from realize.data.atomic import write_text_atomic
from realize.data.errors import UserInputError
from realize.data.results_dataset import export_dataset, write_rows
from realize.data.safe_text import printable
from realize.audit import Target
from realize.audit_batch import judge_all
from realize.audit_store import ItemStore
from realize.audit_types import VectorAudit
from realize.report import render_report, write_report
from realize.verdict import VerdictThresholds

NAN = float("nan")


def audit_rows(audit: VectorAudit, *, model: str, seed: int, budget: str) -> list[dict[str, Any]]:
    """One row per frontier prompt of one audit (the verdict's prompt flagged `is_best`)."""
    cal = audit.calibration
    rows = []
    for score in audit.frontier:
        is_best = audit.best is not None and score.ids == audit.best.ids
        rows.append({
            "vector_id": audit.vector_id, "vector_name": audit.name, "source_file": audit.source,
            "kind": audit.kind, "model": model, "layer": audit.layer, "scale": audit.scale,
            "method": audit.method, "attack": score.attack, "prompt": score.prompt,
            "prompt_ids": list(score.ids), "is_best": is_best, "cos_heldout": score.cos,
            "specific_cos_heldout": score.specific_cos, "per_position_cos": score.per_position_cos,
            "norm_ratio": score.norm_ratio, "perplexity": score.perplexity,
            "worst_window_perplexity": score.worst_window_perplexity, "realism": score.realism,
            "behavior_recovery": (audit.behavior_recovery if is_best and audit.behavior_recovery is not None
                                  else NAN),
            "null_percentile": cal.null_percentile if cal else NAN,
            "realizability_score": cal.score if cal else NAN,
            "score_low": audit.interval[0] if audit.interval else NAN,
            "score_high": audit.interval[1] if audit.interval else NAN,
            "verdict": audit.verdict or "", "seed": seed, "budget": budget, "seconds": audit.seconds,
        })
    return rows


def write_outputs(
    audits: Sequence[VectorAudit], out_dir: str | os.PathLike[str], *, model: str, seed: int, budget: str,
    settings: str,
) -> dict[str, Path]:
    """Write results, the dataset of realizable steers and the report; returns their paths."""
    out = Path(out_dir)
    rows = [r for a in audits for r in audit_rows(a, model=model, seed=seed, budget=budget)]
    parquet = write_rows(rows, out)
    dataset = out / "dataset"
    export_dataset(rows, dataset)
    null = [a.best.specific_cos if a.best else 0.0 for a in audits if a.kind == "null"]
    positive = [a.best.specific_cos if a.best else 0.0 for a in audits if a.kind == "positive"]
    ordered = [a for a in audits if a.kind == "vector"] + [a for a in audits if a.kind != "vector"]
    page = render_report(ordered, null=null, positive=positive, title="realize audit", settings=settings)
    report = out / "report.html"
    write_report(report, page)
    return {"results": parquet, "dataset": dataset, "report": report}


def summary_line(audit: VectorAudit) -> str:
    """One line per finished vector for the terminal."""
    cal = audit.calibration
    score = f"{cal.score:.2f}" if cal else "–"
    best = audit.best
    prompt = (f'"{printable(best.prompt, limit=200)}" (specific cos {best.specific_cos:.2f}, '
              f'realism {best.realism:.2f})' if best else "none")
    behavior = (f", behavior {audit.behavior_recovery:.2f}" if audit.behavior_recovery is not None
                and math.isfinite(audit.behavior_recovery) else "")
    return f"{printable(audit.name, limit=200)}: {audit.verdict} (score {score}{behavior}); best prompt {prompt}"


IDENTITY, PLAN, ITEMS = "audit.json", "plan.json", "items"


def write_plan(out_dir: str | os.PathLike[str], targets: Sequence[Target]) -> None:
    """Record the planned items (ids, kinds, names, layers) in `plan.json`, atomically."""
    items = [{"id": t.vector_id, "kind": t.kind, "name": t.name, "layer": t.layer} for t in targets]
    write_text_atomic(Path(out_dir) / PLAN, json.dumps({"items": items}, indent=1) + "\n")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"{path.parent}: no {path.name} here (not a `realize audit --out` directory)") from None
    except (OSError, ValueError) as err:
        raise UserInputError(f"{path}: unreadable ({err})") from None


def merge_directory(out_dir: str | os.PathLike[str]) -> tuple[list[VectorAudit], dict[str, Path]]:
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
    judged = judge_all(audits, thresholds)
    settings = (f"model {model} · budget {config['budget']} · placement {config['placement']} · "
                f"seed {config['seed']}")
    paths = write_outputs(judged, out, model=model, seed=config["seed"], budget=config["budget"], settings=settings)
    return judged, paths
