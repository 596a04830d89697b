"""Batch-audit throughput on this machine: vectors/hour with 1 process vs N processes (torchrun, gloo on CPU).

    python benchmarks/bench_batch.py [--vectors 4] [--processes 2] [--budget quick] [--out-dir benchmarks/results]

Steps: write `--vectors` vectors (mean shifts of natural prompts at layer 12, so audits do real work), warm the
calibration-control cache once (both measured runs then only audit the vectors), then time the same
`realize audit` command end to end (start-up and model load included) as one process (all cores) and as
`torchrun --standalone --nproc-per-node N` (cores divided: OMP_NUM_THREADS = cores // N). Prints vectors/hour and
the ratio, checks both runs produced identical rows, writes benchmarks/results/batch.json. On a GPU machine the
same script measures GPU processes (one per device).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _setup import machine, write_json

from realize.data.chat import chat_layout, encode
from realize.data.corpora import load_corpus
from realize.data.models import load_model
from realize.data.shift import mean_shift, prompt_shifts
from realize.data.vectors import SteeringVector, save_safetensors

ROOT = Path(__file__).resolve().parents[1]


def _vectors(n: int, layer: int, path: Path) -> None:
    lm = load_model()
    contexts = [encode(lm.tokenizer, c) for c in load_corpus("contexts")[:8]]
    prompts = load_corpus("natural_prompts")[100 : 100 + n]
    shifts = prompt_shifts(lm.model, chat_layout(lm.tokenizer), [encode(lm.tokenizer, p) for p in prompts],
                           contexts, layer)
    norm = float(torch.stack([mean_shift(s).norm() for s in shifts]).mean())  # one norm: the nulls are shared
    vectors = [SteeringVector(directions={layer: mean_shift(s) / mean_shift(s).norm()}, scale=norm,
                              method="natural-prompt shift", name=f"shift{i}") for i, s in enumerate(shifts)]
    save_safetensors(vectors, path)


def _run(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in rows), key=lambda r: (r["vector_id"],
                                                                                                  r["prompt"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=4)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--layer", type=int, default=12)
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        vfile = work / "vectors.safetensors"
        _vectors(args.vectors, args.layer, vfile)
        env = {**os.environ, "REALIZE_CACHE": str(work / "cache"), "PYTHONPATH": str(ROOT)}
        cached_models = Path(os.environ.get("REALIZE_CACHE") or Path.home() / ".cache" / "realize")
        if (cached_models / "models").is_dir():  # reuse the dequantized model, not the controls
            (work / "cache").mkdir()
            os.symlink(cached_models / "models", work / "cache" / "models")
        audit = ["-m", "realize", "audit", str(vfile), "--budget", args.budget, "--quiet"]
        print("warming the control cache ...", flush=True)
        warm = _run([sys.executable, *audit, "--out", str(work / "warm")], env)
        one = _run([sys.executable, *audit, "--out", str(work / "one")], {**env, "OMP_NUM_THREADS": str(cores)})
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        threads = str(max(1, cores // args.processes))
        many = _run([torchrun, "--standalone", "--nproc-per-node", str(args.processes), *audit, "--out",
                     str(work / "many")], {**env, "OMP_NUM_THREADS": threads})
        one_rows, many_rows = _rows(work / "one"), _rows(work / "many")
        same = one_rows == many_rows
        best = lambda rows: sorted((r["vector_name"], r["prompt"], r["verdict"]) for r in rows if r["is_best"])
        same_best = best(one_rows) == best(many_rows)
    result = {
        "vectors": args.vectors, "budget": args.budget, "layer": args.layer, "cores": cores,
        "warm_run_seconds": warm,
        "one_process": {"seconds": one, "threads": cores, "vectors_per_hour": 3600 * args.vectors / one},
        "processes": {"n": args.processes, "seconds": many, "threads_each": int(threads),
                      "vectors_per_hour": 3600 * args.vectors / many},
        "identical_rows": same, "identical_best_prompts_and_verdicts": same_best,
    }
    result["speedup"] = one / many
    print(f"{args.vectors} vectors, budget {args.budget}, controls cached: 1 process x {cores} threads "
          f"{result['one_process']['vectors_per_hour']:.0f} vectors/h ({one:.0f} s); {args.processes} processes x "
          f"{threads} threads {result['processes']['vectors_per_hour']:.0f} vectors/h ({many:.0f} s) -> "
          f"{result['speedup']:.2f}x; identical rows: {same}, identical best prompts and verdicts: {same_best} "
          "(different thread counts change float summation order, so the searches may branch differently)")
    write_json(f"{args.out_dir}/batch.json", {"machine": machine(), **result})


if __name__ == "__main__":
    main()
