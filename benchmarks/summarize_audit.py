"""One audit directory as the numbers the README reports: controls used, positives with and without retrieval,
each item's verdict, stability and best prompt, per axis.

    python benchmarks/summarize_audit.py DIR [--json OUT.json]

Reads DIR/results.parquet (verdicts, test-context values, the content test) and DIR/items/*.json (positives'
"search alone" result, the form siblings and the unrelated instruction of each best prompt), so it needs a finished
audit (or `realize merge DIR`).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
from _setup import write_json


def summarize(directory: Path) -> dict[str, object]:
    rows = pq.read_table(directory / "results.parquet").to_pylist()
    items = {}
    for path in sorted((directory / "items").glob("*.json")):
        raw = json.loads(path.read_text(encoding="utf-8"))
        items[raw["vector_id"]] = raw
    best: dict[tuple[str, str], dict] = {}
    for r in rows:  # per item and axis: the best prompt's row, else any row (it carries the item's verdict)
        key = (r["vector_id"], r["axis"])
        if r["is_best"] or key not in best:
            best[key] = r
    out: dict[str, list[dict[str, object]]] = defaultdict(list)
    for (vector_id, axis), r in sorted(best.items(), key=lambda kv: (kv[0][1], kv[1]["kind"], kv[1]["vector_name"])):
        item = items.get(vector_id, {})
        value = r["specific_cos_test"] if axis == "activation" else r["recovery_test"]
        entry: dict[str, object] = {
            "name": r["vector_name"], "kind": r["kind"], "verdict": r["verdict"], "stability": r["verdict_stability"],
            "value": value if r["is_best"] else None, "prompt": r["prompt"] if r["is_best"] else None,
            "realism": r["realism"] if r["is_best"] else None, "target_norm": r["target_norm"],
            "magnitude_factor": r["magnitude_factor"], "seconds": r["seconds"],
        }
        evidence = item.get("axes", {}).get(axis, {})
        alone = evidence.get("best_search_alone")
        if axis == "activation" and r["kind"] == "positive":
            entry["search_alone"] = None if alone is None else alone["value"]
            entry["search_alone_prompt"] = None if alone is None else alone["prompt"]
        entry["content"] = r["content"] or None
        entry["content_margin"] = r["content_margin"]
        entry["true_content_margin"] = r["true_content_margin"]
        entry["siblings"] = [(s["score"]["prompt"], s["score"]["value"]) for s in evidence.get("siblings", [])]
        unrelated = evidence.get("unrelated")
        if unrelated:
            entry["unrelated_prompt"] = unrelated["score"]["prompt"]
            entry["unrelated_value"] = unrelated["score"]["value"]
        out[axis].append(entry)
    counts = {axis: {k: sum(e["kind"] == k for e in entries) for k in sorted({e["kind"] for e in entries})}
              for axis, entries in out.items()}
    return {"directory": str(directory), "controls": counts, "items": dict(out)}


def _fmt(x: object) -> str:
    return "-" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    summary = summarize(args.directory)
    if args.json:
        write_json(args.json, summary)
    print("controls:", summary["controls"])
    for axis, entries in summary["items"].items():  # type: ignore[union-attr]
        print(f"== {axis}")
        for e in entries:
            extra = ""
            if "search_alone" in e:
                extra = f"  search alone {_fmt(e['search_alone'])}"
            if e.get("content"):
                extra += (f"  content {e['content']} (margin {_fmt(e['content_margin'])} vs true "
                          f"{_fmt(e['true_content_margin'])})")
            if "unrelated_value" in e:
                extra += f"  unrelated {_fmt(e['unrelated_value'])} ({e['unrelated_prompt']!r})"
            print(f"  {e['kind']:<17} {e['name'][:34]:<34} {e['verdict']:<24} stab {_fmt(e['stability'])} "
                  f"value {_fmt(e['value'])} k {_fmt(e['magnitude_factor'])} {e['prompt']!r}{extra}")


if __name__ == "__main__":
    main()
