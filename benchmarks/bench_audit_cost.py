"""What an audit costs, before and after, side by side in one run: cold (calibration computed) and warm (only the
vectors), per vector in a batch, and a first audit with the shipped calibration.

    python benchmarks/bench_audit_cost.py [--before da85733] [--vectors 10] [--layer 7] [--budget quick]

Vectors: `--vectors` MELBO vectors at `--layer` (one training run: one norm, the common batch), trained once and
used by every version. Each version runs the same `realize audit VECTORS --budget B` command (both axes, no
on-manifold share) in its own fresh cache directory (the dequantized models are copied in: loading is not what is
measured): cold (every control computed: `--no-shipped-calibration` for this checkout), then warm (the same
command into a new output directory: every control from the cache, only the vectors are audited). Per-vector cost
= warm wall time / n; items per hour = the items audited / wall time. This checkout also runs once more with the
shipped calibration allowed, cold otherwise ("first audit").

`before` = the git revision `--before`, installed into its own interpreter (a worktree, `pip install --target`,
a venv whose path holds it ahead of this venv's dependencies), run from a neutral directory.
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
    save_safetensors(train_melbo(load_model(), prompts, MelboConfig(source_layer=layer, n_vectors=n, steps=40)),
                     path)


def _before_python(revision: str, work: Path) -> Path:
    """An interpreter that imports `revision`'s realize (its own install) and this venv's dependencies."""
    tree, site, venv = work / "before-src", work / "before-site", work / "before-venv"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=ROOT, check=True,
                   capture_output=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(tree)], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    packages = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (next((venv / "lib").glob("python*")) / "site-packages" / "deps.pth").write_text(f"{site}\n{packages}\n")
    return venv / "bin" / "python"


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    items = next((int(line.split()[0]) for line in done.stdout.splitlines() if line.endswith("process(es)")), 0)
    return time.perf_counter() - start, items


def _cache(name: str, work: Path) -> Path:
    cache = work / f"cache-{name}"
    models = Path(os.environ.get("REALIZE_CACHE") or Path.home() / ".cache" / "realize") / "models"
    if models.is_dir():  # the dequantized models: loading is not what is measured
        shutil.copytree(models, cache / "models", dirs_exist_ok=True)
    return cache


def _version(name: str, cmd: list[str], work: Path, env: dict[str, str], n: int,
             cold_flags: tuple[str, ...] = ()) -> dict[str, float]:
    env = {**env, "REALIZE_CACHE": str(_cache(name, work))}
    cold, cold_items = _timed([*cmd, *cold_flags, "--out", str(work / f"{name}-cold")], work, env)
    warm, _ = _timed([*cmd, "--out", str(work / f"{name}-warm")], work, env)
    result = {"cold_s": cold, "warm_s": warm, "per_vector_s": warm / n, "calibration_s": cold - warm,
              "items": cold_items, "items_per_hour_cold": 3600 * cold_items / cold, "vectors_per_hour_warm": 3600 * n / warm}
    print(f"{name:12s} cold {cold:7.0f} s ({cold_items} items, {result['items_per_hour_cold']:.0f}/h)  warm {warm:6.0f} s"
          f"  per vector {warm / n:6.1f} s ({result['vectors_per_hour_warm']:.0f}/h)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="da85733", help="git revision of the 'before' version")
    parser.add_argument("--vectors", type=int, default=10)
    parser.add_argument("--layer", type=int, default=7)
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "audit_cost.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="realize-cost-"))
    vectors = work / "melbo.safetensors"
    _train(vectors, args.vectors, args.layer)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    common = ["-m", "realize", "audit", str(vectors), "--budget", args.budget, "--quiet", "--no-manifold"]
    results: dict[str, object] = {}
    try:
        before = _before_python(args.before, work)
        results["before"] = _version("before", [str(before), *common], work, env, args.vectors)
        results["after"] = _version("after", [sys.executable, *common], work, env, args.vectors,
                                    ("--no-shipped-calibration",))
        first, items = _timed([sys.executable, *common, "--out", str(work / "first")], work,
                              {**env, "REALIZE_CACHE": str(_cache("first", work))})
        results["after_first_audit_with_shipped_calibration_s"] = first
        print(f"after, first audit with the shipped calibration: {first:.0f} s ({items} items)", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(work / "before-src")], cwd=ROOT,
                       capture_output=True)
    b, a = results["before"], results["after"]
    results["per_vector_ratio"] = a["per_vector_s"] / b["per_vector_s"]  # type: ignore[index]
    results["cold_ratio"] = a["cold_s"] / b["cold_s"]  # type: ignore[index]
    write_json(Path(args.out), {"machine": machine(), "args": vars(args), "results": results})
    print(json.dumps({k: v for k, v in results.items() if k.endswith("ratio")}, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
