"""The second architecture end to end: `realize audit --demo --model gemma3-270m --budget quick` on the base
Gemma-3-270M (no chat template: plain layout), timed, with its verdicts.

    python benchmarks/bench_gemma_audit.py [--budget quick] [--out-dir benchmarks/results] [--keep DIR]

Runs the CLI in this process (model load and MELBO training of the two demo vectors included in the wall time),
with `--no-control-cache` so that every control is searched, then reads results.parquet and writes
benchmarks/results/gemma_audit.json: wall time, peak RSS, and per item (demo vectors, positives, nulls) the best
prompt, its test-context raw/specific cosine (activation) or recovery (behavior), perplexity, realism and verdict. Prints the positives-vs-nulls gap (the
audit calibrates against it). The model's first load dequantizes the GGUF (~1 min) and is cached; run the script
once to warm it, or count that minute. An existing `--keep` directory of the same configuration is resumed (its
finished items are not recomputed, so the wall time is not the audit's).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from _setup import machine, write_json

from realize.cli import main
from realize.data.models import GEMMA_MODEL, load_model

FIELDS = ("kind", "axis", "vector_name", "layer", "prompt", "cos_test", "specific_cos_test", "recovery_test",
          "norm_ratio", "perplexity", "realism", "realizability_score", "verdict", "verdict_stability", "seconds")


def run(budget: str, out: Path) -> dict[str, object]:
    start = time.perf_counter()
    load_model(GEMMA_MODEL)  # warm (the CLI loads it again from the cache: a few seconds)
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    code = main(["audit", "--demo", "--model", GEMMA_MODEL, "--budget", budget, "--out", str(out), "--quiet",
                 "--overwrite", "--no-control-cache"])
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"realize audit exited with {code}")
    rows = [r for r in pq.read_table(out / "results.parquet").to_pylist() if r.get("is_best")]
    items = [{k: r.get(k) for k in FIELDS} for r in rows]
    positives = [r["specific_cos_test"] for r in items if r["kind"] == "positive"]
    nulls = [r["specific_cos_test"] for r in items if r["kind"] == "null" and r["axis"] == "activation"]
    behavior_positives = [r["recovery_test"] for r in items if r["kind"] == "behavior-positive"]
    behavior_nulls = [r["recovery_test"] for r in items if r["kind"] == "null" and r["axis"] == "behavior"]
    return {
        "command": f"realize audit --demo --model {GEMMA_MODEL} --budget {budget} --no-control-cache",
        "wall_seconds": round(seconds, 1), "warm_load_seconds": round(load_seconds, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "positives_specific_cos": positives, "nulls_specific_cos": nulls,
        "positives_above_nulls": bool(positives and nulls and min(positives) > max(nulls)),
        "behavior_positives_recovery": behavior_positives, "behavior_nulls_recovery": behavior_nulls,
        "items": items, "machine": machine(),
    }


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--out-dir", default="benchmarks/results")
    parser.add_argument("--keep", help="audit output directory to keep (default: a temporary one)")
    args = parser.parse_args()
    if args.keep:
        result = run(args.budget, Path(args.keep))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(args.budget, Path(tmp) / "audit")
    write_json(Path(args.out_dir) / "gemma_audit.json", result)
    print(f"wall {result['wall_seconds']} s, peak RSS {result['peak_rss_gib']} GiB")
    for item in result["items"]:
        value = item["specific_cos_test"] if item["axis"] == "activation" else item["recovery_test"]
        print(f"  {item['kind']:<17} {item['axis']:<10} {item['vector_name']:<28} value {value:.2f}  "
              f"{item['verdict']:<30} {item['prompt']!r}")
    print(f"positives {result['positives_specific_cos']} vs nulls {result['nulls_specific_cos']}: "
          f"{'above' if result['positives_above_nulls'] else 'NOT above'}")


if __name__ == "__main__":
    main_cli()
