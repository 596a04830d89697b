"""Turn finished audits into the output directory: results.parquet/jsonl, the dataset, report.html."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data.results_dataset import export_dataset, write_rows
from realize.audit_types import VectorAudit
from realize.report import render_report, write_report

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
    prompt = f'"{best.prompt}" (specific cos {best.specific_cos:.2f}, realism {best.realism:.2f})' if best else "none"
    behavior = (f", behavior {audit.behavior_recovery:.2f}" if audit.behavior_recovery is not None
                and math.isfinite(audit.behavior_recovery) else "")
    return f"{audit.name}: {audit.verdict} (score {score}{behavior}); best prompt {prompt}"
