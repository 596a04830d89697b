"""Search quality on the real model: beam, fluent Pareto, relaxed (PEZ) vs plain GCG at equal wall time.

    python benchmarks/bench_search.py [--layer 12] [--targets natural random] [--out benchmarks/results/search.json]

For each target (the shift of a natural prompt, and a random direction of the same norm) it reports, on held-out
contexts, raw and specific cosine and the prompt's perplexity under the LM:
- beam (LM-guided, BEAST-style), its best prompt;
- fluent (EPO-style) initialized from the beam's prompt: the frontier and its best readable point (ppl <= 300);
- relaxed (PEZ) + GCG polish, and plain GCG given the same wall time (steps grow until its time is spent).
Sizes default to a run of a few minutes per target on 2 CPU cores; `--scale` multiplies the steps.
"""

from __future__ import annotations

import argparse
import logging
import time

from _setup import Problem, build, machine, write_json

from realize.attacks import beam, fluent, gcg, relaxed
from realize.data.models import load_model


def run_problem(problem: Problem, scale: float, seed: int) -> dict[str, object]:
    out: dict[str, object] = {"kind": problem.kind, "layer": problem.layer}
    steps = lambda n: max(1, round(n * scale))  # noqa: E731
    b = beam.run(problem.objective, problem.lm, problem.layout,
                 beam.BeamConfig(beam_width=8, samples_per_beam=8, length=steps(12), seed=seed))
    out["beam"] = {**problem.report(b.best_ids), "seconds": b.seconds, "evaluations": b.n_evaluations}
    print("beam", out["beam"], flush=True)

    f = fluent.run(problem.objective, problem.lm, problem.layout,
                   fluent.FluentConfig(lambdas=(0.0, 0.03, 0.1, 0.3), steps=steps(8), width=16, top_k=32,
                                       restart_every=4, seed=seed), init=b.best_ids)
    frontier = [{**problem.report(p.ids), "lambda": p.fluency_weight, "opt_cos": p.cos} for p in f.frontier]
    readable = [p for p in frontier if p["perplexity"] <= 300.0]
    best = max(readable, key=lambda p: p["heldout_cos"]) if readable else None
    out["fluent"] = {"seconds": f.seconds, "evaluations": f.n_evaluations, "frontier": frontier,
                     "best_readable": best, "best_any": max(frontier, key=lambda p: p["heldout_cos"])}
    print("fluent best readable", best, flush=True)
    print("fluent best any", out["fluent"]["best_any"], flush=True)

    polish = gcg.GCGConfig(width=64, top_k=64, seed=seed, p_length_move=0.0)
    r = relaxed.run(problem.objective, problem.lm, problem.layout,
                    relaxed.RelaxedConfig(length=12, steps=steps(40), polish_steps=steps(4), polish=polish, seed=seed))
    out["relaxed"] = {**problem.report(r.best_ids), "seconds": r.seconds, "evaluations": r.n_evaluations}
    print("relaxed", out["relaxed"], flush=True)

    # plain GCG with the same wall time: run step by step budgets until the relaxed run's time is spent
    started, g = time.perf_counter(), None
    n = 2
    while True:
        g = gcg.run(problem.objective, problem.lm, problem.layout,
                    gcg.GCGConfig(steps=n, width=64, top_k=64, seed=seed, p_length_move=0.0))
        if g.seconds >= r.seconds or time.perf_counter() - started > 3 * r.seconds:
            break
        n = max(n + 1, round(n * r.seconds / max(g.seconds, 1e-6)))
    out["gcg_equal_time"] = {**problem.report(g.best_ids), "seconds": g.seconds, "steps": n,
                             "evaluations": g.n_evaluations}
    print("gcg equal time", out["gcg_equal_time"], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", type=int, default=12)
    parser.add_argument("--targets", nargs="+", default=["natural", "random"], choices=["natural", "random"])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/search.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    lm = load_model()
    results = [run_problem(build(kind, layer=args.layer, lm=lm, seed=args.seed), args.scale, args.seed)
               for kind in args.targets]
    print("\n| target | attack | held-out cos | specific cos | perplexity | seconds | prompt |")
    print("|---|---|---|---|---|---|---|")
    for res in results:
        rows = [("beam", res["beam"]), ("fluent (best readable)", res["fluent"]["best_readable"]),
                ("fluent (best any)", res["fluent"]["best_any"]), ("relaxed+polish", res["relaxed"]),
                ("gcg (equal time)", res["gcg_equal_time"])]
        for name, row in rows:
            if row is None:
                print(f"| {res['kind']} | {name} | - | - | - | - | (none) |")
                continue
            spec = row["heldout_specific_cos"]
            secs = row.get("seconds", res["fluent"]["seconds"] if name.startswith("fluent") else float("nan"))
            print(f"| {res['kind']} | {name} | {row['heldout_cos']:.3f} | {spec:.3f} | {row['perplexity']:.0f} | "
                  f"{secs:.0f} | {row['prompt']!r} |")
    write_json(args.out, {"machine": machine(), "layer": args.layer, "results": results})


if __name__ == "__main__":
    main()
