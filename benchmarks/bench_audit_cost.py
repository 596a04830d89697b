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


def _vector_item_seconds(out: Path) -> list[float]:
    """Item time of every vector item an audit wrote (both versions store `kind` and `seconds` per item file)."""
    seconds = []
    for path in sorted((out / "items").glob("*.json")):
        item = json.loads(path.read_text())
        item = item.get("audit", item) if isinstance(item, dict) else {}
        if item.get("kind") == "vector" and isinstance(item.get("seconds"), (int, float)):
            seconds.append(float(item["seconds"]))
    return seconds


def _cache(name: str, work: Path) -> Path:
    cache = work / f"cache-{name}"
    models = Path(os.environ.get("REALIZE_CACHE") or Path.home() / ".cache" / "realize") / "models"
    if models.is_dir():  # the dequantized models: loading is not what is measured
        shutil.copytree(models, cache / "models", dirs_exist_ok=True)
    return cache


def _version(name: str, cmd: list[str], work: Path, env: dict[str, str], n: int,
             cold_flags: tuple[str, ...] = ()) -> dict[str, float]:
    """Cold (`cold_flags` added), then warm into a new output directory with the same cache."""
    env = {**env, "REALIZE_CACHE": str(_cache(name, work))}
    cold, cold_items = _timed([*cmd, *cold_flags, "--out", str(work / f"{name}-cold")], work, env)
    warm, _ = _timed([*cmd, "--out", str(work / f"{name}-warm")], work, env)
    items = _vector_item_seconds(work / f"{name}-warm")
    result = {"cold_s": cold, "warm_s": warm, "per_vector_s": warm / n, "calibration_s": cold - warm,
              "items": cold_items, "items_per_hour_cold": 3600 * cold_items / cold, "vectors_per_hour_warm": 3600 * n / warm,
              "vector_item_s": items, "vector_item_mean_s": sum(items) / max(len(items), 1)}
    print(f"{name:12s} cold {cold:7.0f} s ({cold_items} items, {result['items_per_hour_cold']:.0f}/h)  warm {warm:6.0f} s"
          f"  per vector {warm / n:6.1f} s ({result['vectors_per_hour_warm']:.0f}/h), vector item time "
          f"{result['vector_item_mean_s']:.1f} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="da85733", help="git revision of the 'before' version")
    parser.add_argument("--vectors", type=int, default=10)
    parser.add_argument("--layer", type=int, default=7)
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "audit_cost.json"))
    parser.add_argument("--skip-after-cold", action="store_true",
                        help="this checkout: no run with every control computed (its cold cost is what "
                             "scripts/ship-calibration prints); warm = the rerun after the first audit")
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
        if not args.skip_after_cold:
            results["after"] = _version("after", [sys.executable, *common], work, env, args.vectors,
                                        ("--no-shipped-calibration",))
        first_env = {**env, "REALIZE_CACHE": str(_cache("first", work))}
        first, items = _timed([sys.executable, *common, "--out", str(work / "first")], work, first_env)
        results["after_first_audit_with_shipped_calibration_s"] = first
        results["after_first_audit_items"] = items
        print(f"after, first audit with the shipped calibration: {first:.0f} s ({items} items)", flush=True)
        if args.skip_after_cold:
            warm, _ = _timed([sys.executable, *common, "--out", str(work / "first-warm")], work, first_env)
            seconds = _vector_item_seconds(work / "first-warm")
            results["after"] = {"warm_s": warm, "per_vector_s": warm / args.vectors,
                                "vectors_per_hour_warm": 3600 * args.vectors / warm, "vector_item_s": seconds,
                                "vector_item_mean_s": sum(seconds) / max(len(seconds), 1)}
            print(f"after        warm {warm:6.0f} s  per vector {warm / args.vectors:6.1f} s, vector item time "
                  f"{results['after']['vector_item_mean_s']:.1f} s", flush=True)  # type: ignore[index]
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(work / "before-src")], cwd=ROOT,
                       capture_output=True)
    b, a = results["before"], results["after"]
    results["per_vector_ratio"] = a["per_vector_s"] / b["per_vector_s"]  # type: ignore[index]
    results["vector_item_ratio"] = a["vector_item_mean_s"] / b["vector_item_mean_s"]  # type: ignore[index]
    if "cold_s" in a:  # type: ignore[operator]
        results["cold_ratio"] = a["cold_s"] / b["cold_s"]  # type: ignore[index]
    write_json(Path(args.out), {"machine": machine(), "args": vars(args), "results": results})
    print(json.dumps({k: v for k, v in results.items() if k.endswith("ratio")}, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
