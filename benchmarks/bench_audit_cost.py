"""Wall time of a batch audit per vector, before and after, side by side in one run; calibration on its own.

    python benchmarks/bench_audit_cost.py [--before 3169f3b] [--vectors 10] [--layer 7] [--budget default]

Vectors: `--vectors` MELBO vectors at `--layer` (one file, one norm: the common case of a batch from one training
run), trained once and reused. For each version the same `realize audit` command runs twice in a fresh cache
directory: cold (the calibration controls are computed and cached) and warm (only the vectors are audited). The
warm run's wall time / n is the per-vector cost; cold - warm is the one-time calibration per (model, layer, budget).

Versions: `before` = the git revision `--before`, checked out into a temporary worktree and run from there (it used
top-level `data`/`attacks`/`scorers` imports, so it runs with its worktree as the working directory); `after` = this
checkout, activation axis only (the question `before` answered) and both axes (activation + behavior).
Writes benchmarks/results/audit_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _setup import machine, write_json

ROOT = Path(__file__).resolve().parents[1]


def _train(path: Path, n: int, layer: int) -> None:
    from realize.data.models import load_model
    from realize.data.vectors import save_safetensors
    from realize.vector_training import MelboConfig, train_melbo

    prompts = ("Tell me a story about a dragon.", "What is the best way to learn a new language?")
    vectors = train_melbo(load_model(), prompts, MelboConfig(source_layer=layer, n_vectors=n, steps=40))
    save_safetensors(vectors, path)


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def _version(name: str, cmd: list[str], cwd: Path, env: dict[str, str], work: Path, n: int) -> dict[str, float]:
    env = {**env, "REALIZE_CACHE": str(work / f"cache-{name}")}
    models = Path(os.environ.get("REALIZE_CACHE") or Path.home() / ".cache" / "realize") / "models"
    if models.is_dir():  # the dequantized model is not part of what is measured
        shutil.copytree(models, work / f"cache-{name}" / "models", dirs_exist_ok=True)
    cold = _timed([*cmd, "--out", str(work / f"{name}-cold")], cwd, env)
    warm = _timed([*cmd, "--out", str(work / f"{name}-warm")], cwd, env)
    result = {"cold_s": cold, "warm_s": warm, "per_vector_s": warm / n, "calibration_s": cold - warm}
    print(f"{name:28s} cold {cold:7.0f} s  warm {warm:7.0f} s  per vector {warm / n:6.1f} s  "
          f"calibration {cold - warm:7.0f} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="3169f3b", help="git revision of the 'before' version")
    parser.add_argument("--vectors", type=int, default=10)
    parser.add_argument("--layer", type=int, default=7)
    parser.add_argument("--budget", default="default")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "audit_cost.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="realize-cost-"))
    vectors = work / "melbo.safetensors"
    _train(vectors, args.vectors, args.layer)
    old = work / "before"
    subprocess.run(["git", "worktree", "add", "--detach", str(old), args.before], cwd=ROOT, check=True,
                   capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    common = ["audit", str(vectors), "--budget", args.budget, "--quiet", "--no-manifold"]
    results = {}
    try:
        results["before"] = _version("before", [sys.executable, "-m", "realize", *common], old,
                                     {**env, "PYTHONPATH": str(old)}, work, args.vectors)
        results["after_activation"] = _version("after (activation axis)",
                                               [sys.executable, "-m", "realize", *common, "--axes", "activation"],
                                               ROOT, env, work, args.vectors)
        results["after_both_axes"] = _version("after (both axes)", [sys.executable, "-m", "realize", *common],
                                              ROOT, env, work, args.vectors)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
    for key in ("after_activation", "after_both_axes"):
        results[f"{key}_per_vector_ratio"] = results[key]["per_vector_s"] / results["before"]["per_vector_s"]
    write_json(args.out, {"machine": machine(), "args": vars(args), "results": results})
    print(json.dumps({k: v for k, v in results.items() if k.endswith("ratio")}, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
