"""Does a distilled steer read "realizable" when the audit is handed the instruction it was distilled from?

    python benchmarks/bench_hypotheses.py [--layer 7] [--budget quick] [--out runs/hyp-distill-L7] \
        [--results benchmarks/results/hypotheses_distilled_L7.json]

The dataset's distilled steers at one layer (`datasets/audited-steers/vectors/distill.L<layer>.*`, each distilled
from an instruction written for it, recorded in the file's notes) are audited on the behavior axis with every one of
those instructions as a suspected prompt (`realize audit --prompt`), so each steer gets its own instruction and the
others' (same kind of instruction, other content). Reported per steer: the search's verdict, and each suspected
prompt's recovery and verdict. Nothing here was tuned: the rules are the audit's, the instructions the dataset's.
Rerunning resumes from OUT's items (with `--content-level off` it judges them again without the form test's
significance requirement).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _setup import machine, write_json

from realize.cli import main as realize_main
from realize.data.results_dataset import read_rows
from realize.data.vectors import load_vectors

VECTORS = Path("datasets/audited-steers/vectors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=7)
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--results", type=Path, help="also write the summary here")
    parser.add_argument("--content-level", help="passed to `realize audit` (the form test's significance level, or "
                        "'off'); a rerun on the same --out only judges again")
    args = parser.parse_args()
    out = args.out or Path(f"runs/hyp-distill-L{args.layer}")
    files = sorted(VECTORS.glob(f"distill.L{args.layer}.*.safetensors"))
    if not files:
        raise SystemExit(f"no distilled steers at layer {args.layer} under {VECTORS}")
    vectors = [load_vectors(str(f))[0] for f in files]
    instructions = {v.name: v.notes for v in vectors}
    flags = [x for text in instructions.values() for x in ("--prompt", text)]
    code = realize_main(["audit", *map(str, files), "--budget", args.budget, "--axes", "behavior", "--no-manifold",
                         "--quiet", "--out", str(out), *flags,
                         *(("--content-level", args.content_level) if args.content_level else ())])
    rows = [r for r in read_rows(out / "results.parquet") if r["kind"] == "vector"]
    steers = []
    for name, own in instructions.items():
        mine = [r for r in rows if r["vector_name"] == name]
        best = next((r for r in mine if r["is_best"]), None)
        suspected = {r["prompt"]: r for r in mine if r["attack"] == "hypothesis"}
        ranked = sorted(suspected, key=lambda p: -suspected[p]["recovery_test"])
        steers.append({
            "steer": name, "instruction": own, "verdict": mine[0]["verdict"] if best is None else best["verdict"],
            "best_prompt": None if best is None else best["prompt"],
            "best_recovery": None if best is None else best["recovery_test"],
            "own": {"recovery": suspected[own]["recovery_test"], "verdict": suspected[own]["prompt_verdict"],
                    "stability": suspected[own]["verdict_stability"], "realism": suspected[own]["realism"]},
            "own_ranks_first": ranked[0] == own,
            "others": {p: {"recovery": r["recovery_test"], "verdict": r["prompt_verdict"]}
                       for p, r in suspected.items() if p != own},
        })
        print(f"{name}: search {steers[-1]['verdict']}; own instruction {suspected[own]['recovery_test']:+.2f} "
              f"{suspected[own]['prompt_verdict']} (rank {ranked.index(own) + 1} of {len(ranked)})", flush=True)
    summary = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "exit_code": code,
               "steers": steers, "own_realizable": sum(s["own"]["verdict"] == "realizable" for s in steers),
               "own_ranks_first": sum(s["own_ranks_first"] for s in steers), "n": len(steers)}
    write_json(out / "summary.json", summary)
    if args.results:
        write_json(args.results, summary)


if __name__ == "__main__":
    main()
