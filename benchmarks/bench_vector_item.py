"""The warm cost of auditing one vector (both axes, quick budget), before and after, side by side in one run.

    python benchmarks/bench_vector_item.py [--before 8563777] [--vectors 2] [--rounds 2] [--threads 2]

Only the vector items are timed (`realize.item.audit_target` on every vector target of the plan): the controls,
which a warm audit reads from its cache or the shipped calibration, are not computed, and planning (model, corpus
shifts, steer effects) runs once per process before the clock starts. MELBO vectors at layer 7 (the demo's
setting), trained once and audited by both versions. Versions alternate (before, after, before, ...) in fresh
processes, `--threads` torch threads each; `before` is the git revision installed into its own interpreter as in
bench_audit_cost.py. Prints the per-item seconds and the ratio; writes benchmarks/results/vector_item.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

from _setup import machine, write_json

from bench_audit_cost import ROOT, _before_python, _train

CHILD = """
import json, sys, time, torch
from realize.config import AuditConfig
from realize.data.models import load_model
from realize.data.vectors import load_vectors
from realize.item import audit_target
from realize.pipeline import plan_audit
torch.set_num_threads(int(sys.argv[2]))
lm = load_model()
config = AuditConfig(budget="quick")
plan = plan_audit(lm, load_vectors(sys.argv[1]), config)
seconds = []
for target in (t for t in plan.targets if t.kind == "vector"):
    start = time.perf_counter()
    audit_target(plan.settings[target.layers], target, config)
    seconds.append(time.perf_counter() - start)
print("SECONDS", json.dumps(seconds))
"""


def _items(python: Path, vectors: Path, threads: int, cwd: Path) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run([str(python), "-c", CHILD, str(vectors), str(threads)], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("SECONDS ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"{python}: the vector items failed: {done.stderr[-2000:]}")
    return json.loads(line.removeprefix("SECONDS "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="8563777")
    parser.add_argument("--vectors", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-vector-item-"))
    try:
        vectors = work / "vectors.safetensors"
        _train(vectors, args.vectors, 7)
        versions = {"before": _before_python(args.before, work), "after": Path(sys.executable)}
        seconds: dict[str, list[float]] = {name: [] for name in versions}
        for round_ in range(args.rounds):
            for name, python in versions.items():
                items = _items(python, vectors, args.threads, work)
                seconds[name] += items
                print(f"round {round_}: {name} {[round(s, 1) for s in items]} s per vector item", flush=True)
        summary = {name: {"per_item_s": s, "median_s": median(s)} for name, s in seconds.items()}
        ratio = summary["before"]["median_s"] / summary["after"]["median_s"]
        print(f"median vector item: before {summary['before']['median_s']:.1f} s, after "
              f"{summary['after']['median_s']:.1f} s, {ratio:.2f}x faster")
        write_json(ROOT / "benchmarks" / "results" / "vector_item.json",
                   {"machine": machine(), "before_revision": args.before, "threads": args.threads,
                    "vectors": args.vectors, "rounds": args.rounds, **summary, "speedup": ratio})
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(work / "before-src")], cwd=ROOT,
                       capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
