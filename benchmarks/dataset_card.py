"""Turn a finished dataset audit (OUT/audit) into the dataset of audited steers (OUT/data, OUT/README.md) and the
summary the README's "What we found" cites (OUT/summary.json).

    python benchmarks/dataset_card.py OUT

Rows: one per steer and axis (the steer's verdict, its best prompt chosen on selection contexts, that prompt's test
numbers, the content test, magnitude and effect), `kind == "vector"` only. The card counts verdicts per method and
layer and axis, says what each outcome means and lists the known limits.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _setup import write_json

from realize.data.atomic import atomic_output, write_text_atomic
from realize.data.results_dataset import to_dataset
from realize.data.vectors import load_vectors

MEANING = {
    "realizable": "an ordinary prompt produces this steer, and what it says matters (its same-form siblings fall "
                  "short by at least half the margin true prompts show)",
    "partially realizable": "a prompt gets part of the way: above the null bound, short of the positives",
    "direction realizable": "a prompt reaches the direction, but the steer is larger than natural prompts' shifts "
                            "(a > 1.5 a*)",
    "direction partially realizable": "part of the direction, at a size beyond natural",
    "form realizable": "a prompt of this form reaches it, but swapping its content words does about as well: the "
                       "form is realizable, not this content",
    "generically realizable": "an unrelated instruction does about as well: what any instruction does",
    "not realizable": "no ordinary prompt found at this budget does it better than random directions",
    "inconclusive": "the controls cannot decide (too few, zero spread, positives not above nulls, or an inert steer)",
    "no natural candidate": "no searched prompt passed the realism threshold",
}


def method_of(row: dict) -> str:
    return row["method"]


def cost_text(cost: dict[str, dict[str, float]]) -> str:
    total = sum(c["seconds"] for c in cost.values())
    parts = ", ".join(f"{int(c['items'])} {kind} items {c['seconds'] / 3600:.2f} h" for kind, c in sorted(cost.items()))
    return f"{total / 3600:.1f} h of item compute ({parts})"


def item_seconds(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Compute time per item kind ({kind: {"items": n, "seconds": total}}) from the audit's rows: every row carries
    its item's seconds, so each item (kind, vector_id) is counted once."""
    seconds = {(r["kind"], r["vector_id"]): float(r["seconds"]) for r in rows}
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"items": 0, "seconds": 0.0})
    for (kind, _), s in sorted(seconds.items()):
        out[kind]["items"] += 1
        out[kind]["seconds"] += s
    return dict(out)


def vector_notes(folder: Path) -> dict[str, str]:
    """The text each vector file carries ({file name: notes}): the source prompt of a distilled or natural-shift
    steer, the contrast pair of a CAA steer, the training settings of a MELBO steer."""
    return {path.name: load_vectors(path)[0].notes for path in sorted(folder.iterdir()) if path.is_file()}


PLOTS = re.compile(r'<div class="plots">(?:<img [^>]*>)*</div>')


def text_report(full: Path, out: Path) -> int:
    """Write the audit's HTML report without its embedded PNG plots (every table, verdict, reason and prompt kept):
    the plots are 90 % of its bytes. Returns how many plot blocks were dropped."""
    page, dropped = PLOTS.subn("", full.read_text(encoding="utf-8"))
    note = ("<p class=\"muted\">This copy leaves out the plots (null and positive distributions) to stay small; "
            "<code>bash scripts/build-dataset</code> writes the full report.</p>")
    write_text_atomic(out, page.replace("</h1>", "</h1>" + note, 1))
    return dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    rows = pq.read_table(args.out / "audit" / "results.parquet").to_pylist()
    best: dict[tuple[str, str], dict] = {}
    for r in rows:
        if r["kind"] != "vector":
            continue
        key = (r["vector_id"], r["axis"])
        if r["is_best"] or key not in best:
            best[key] = r
    kept = sorted(best.values(), key=lambda r: (r["vector_name"], r["axis"]))
    shard = args.out / "data" / "train-00000-of-00001.parquet"
    notes = vector_notes(args.out / "vectors")
    table = to_dataset(kept).data.table
    table = table.append_column("vector_notes", pa.array([notes.get(Path(r["source_file"]).name, "") for r in kept],
                                                         pa.string()))
    with atomic_output(shard) as tmp:
        pq.write_table(table, tmp)
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in kept:
        layers = "3-9" if len(r["layers"]) > 1 else str(r["layer"])
        counts[f"{r['axis']} | {method_of(r)} | L{layers}"][r["verdict"]] += 1
    verdicts = sorted({r["verdict"] for r in kept})
    table = ["| axis | method | layer | n | " + " | ".join(verdicts) + " |",
             "|---|---|---|---|" + "---|" * len(verdicts)]
    for key in sorted(counts):
        axis, method, layer = key.split(" | ")
        c = counts[key]
        table.append(f"| {axis} | {method} | {layer} | {sum(c.values())} | "
                     + " | ".join(str(c.get(v, 0)) for v in verdicts) + " |")
    by_prompt = Counter(r["prompt"] for r in kept if r["verdict"] in ("realizable", "partially realizable",
                                                                      "direction realizable", "form realizable"))
    cost = item_seconds(rows)
    build = json.loads((args.out / "build.json").read_text()) if (args.out / "build.json").is_file() else {}
    summary = {"steers": len({r["vector_id"] for r in kept}), "rows": len(kept),
               "counts": {k: dict(v) for k, v in counts.items()}, "frequent_prompts": by_prompt.most_common(10),
               "item_seconds": cost, "build": build}
    write_json(args.out / "summary.json", summary)
    meaning = "\n".join(f"- **{v}**: {MEANING.get(v, '')}" for v in verdicts)
    n_bytes = shard.stat().st_size
    report = args.out / "audit" / "report.html"
    report_mb = f"{report.stat().st_size / 2**20:.0f}" if report.is_file() else "tens of"
    if report.is_file():
        text_report(report, args.out / "audit" / "report-text.html")
    threads = build.get("machine", {}).get("threads", "?")
    card = f"""---
license: cc-by-4.0
language:
- en
pretty_name: Audited steers (SmolLM2-135M-Instruct)
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
---

# Audited steers

{summary['steers']} steering vectors of SmolLM2-135M-Instruct (MELBO, CAA, prompt-distilled, natural prompts' shifts,
random directions; single-layer at layers 7 and 12, and multi-layer at 3-9), each audited by
[realize](https://pypi.org/project/realize/) on two axes: can an ordinary prompt produce its activation shift, and can
one make the model do what it does? One row per steer and axis ({len(kept)} rows, {n_bytes} bytes): the verdict, the
best prompt (chosen on selection contexts; every number on test contexts), the content test, magnitude and effect,
and provenance columns (model and vector file digests, realize version and source digest); `vector_notes` is the
text the vector file carries (a distilled or natural-shift steer's source prompt, a CAA steer's contrast pair), so
a row's prompt can be read beside what the steer was made from. The vectors are in
`vectors/`; the full audit's rows (every evaluated prompt of every steer and control) in `audit/results.parquet`, its
settings and identity in `audit/audit.json`, its plan in `audit/plan.json`. `bash scripts/build-dataset` rebuilds it
all, with the HTML report (`audit/report.html`, {report_mb} MB with its plots, not shipped; `audit/report-text.html` is
the same report without the plots).

How rows were chosen: every steer in `vectors/` has exactly one row per axis, whatever its verdict (no steer is left
out for its numbers); the prompt in a row is the one the audit chose on selection contexts, and its numbers are
measured on test contexts that chose nothing. Controls (positives, nulls) are not rows; they are in `audit/`.

Cost (CPU threads per process: {threads}): {cost_text(cost)}; the run of
`benchmarks/build_dataset.py` that completed the vectors took {build.get('seconds_building_vectors', 0) / 60:.0f} min
(a build resumes: vectors an earlier, interrupted run wrote are kept and not timed again).

## Verdicts per method and layer

{chr(10).join(table)}

## What each outcome means

{meaning}

## Known limits

- One small model (135M parameters), CPU-sized searches (the quick preset): "not realizable" is a statement about
  this budget, not a proof that no prompt exists.
- Controls: 4 nulls and 4 positives per layer (behavior: per effect bin); prediction bounds from 4 nulls are wide.
- The realism judge is a small classifier; a prompt it passes may still read oddly.
- The content test compares the best prompt with its form siblings (content words swapped by the LM); a prompt with
  no content word is all form by construction.
- Activation and behavior are separate questions; a steer realizable on one is not thereby realizable on the other.
- The content test asks whether the found prompt's words matter to the steer (its form siblings do worse), not
  whether they are the steer's own words: for a steer made from a known prompt, the row's prompt may be another
  prompt of the same kind (a different persona, a different topic) that reaches the same shift.
- Most behavior "inconclusive" rows are the controls, not the steer: at the quick budget the positive controls often
  do not beat the nulls by the required separation in the steer's effect bin (the reason is in the report); a few
  are steers that barely change the outputs.
"""
    write_text_atomic(args.out / "README.md", card)
    print(json.dumps(summary["counts"], indent=1))


if __name__ == "__main__":
    main()
