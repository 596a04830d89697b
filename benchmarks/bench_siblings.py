"""Does the audit tell *this* steer from a steer of the same form with other content? Held-out sibling pairs.

    python benchmarks/bench_siblings.py --pairs benchmarks/sibling_pairs_heldout.tsv --layers 6 12 \
        [--budget quick] [--out runs/bench-siblings]

For each pair (A, B) of same-template instructions with different content (written for the check, absent from every
corpus, never tuned on) and each layer, the steer is A's mean shift (and B's) on 8 contexts the audit never uses;
`realize audit` (activation axis) then searches, calibrates and judges it as it would any vector. On 8 *other*
contexts the audit never used, the best prompt p is measured against both targets:

    separation(p)  = cos(p, T_A) - cos(p, T_B)         (specific cosine: g removed)
    true margin    = cos(A, T_A) - cos(A, T_B)

The issue's bar: separation >= half the true margin, or a verdict other than plain "realizable". A control steer
whose prompt the retrieval corpus holds verbatim must stay "realizable" (it is audited beside the pairs).
Verdicts are given for each form-test rule (`RULES`: the margin over the siblings' mean, over the nearest sibling,
and over the mean with the margin required to exceed its 95 % one-sided bootstrap spread, `content_level`), judged
from the same items; `--reuse` judges an earlier run's items again without searching.
Writes OUT/summary.json (benchmarks/results/siblings_<budget>.json when --results is given).

Adoption rule for "mean95", written before any of its verdicts was seen (the runs' items do not depend on it):
it becomes the default only if, on both pair sets at layers 12 and 6, (1) it meets the bar on more targets than
"mean" in at least one of the four cases (never fewer: it only turns "realizable" into "form realizable"); (2) every
verbatim corpus control stays "realizable" (12 of 12); (3) it keeps at least half of the "realizable" verdicts whose
prompt separates own from sibling, pooled over the four cases; and (4) on the behavior axis the own instructions of
`bench_hypotheses.py` (layer 7) that read "realizable" stay so. Without (4) measured it ships as an option only.
Outcome: met ((1) second set, layer 6: 15 vs 14; (2) 12 of 12; (3) 6 of 6 kept; (4) 0 of 30 behavior verdicts
changed), so "mean95" is the default (`VerdictThresholds.content_level` 0.95).

Rule for the content cosine built into the audit (`realize audit --content-cosine`, `VerdictThresholds.
content_cosine`; rule "cosine" here: "mean95" with the content cosine added, its cut half the audit's positives' own
prompts' median), written before any run on the fifth pair set (`sibling_pairs_heldout5.tsv`, written for it): it
becomes the default in a later version only if, on that set at layers 12 and 6 (quick budget), (a) the bar is met
with "cosine" on at least 15 of 16 targets at each layer; (b) the 3 verbatim controls stay "realizable" with it at
each layer; (c) at least 14 of the 16 true prompts reach the cut at each layer (`bench_content_cosine.py --sets
fifth`, its "true prompts reaching the cut"). Otherwise it stays an option.
Outcome (`results/siblings_heldout5_quick.json`, `results/siblings_heldout5_L6_quick.json`,
`results/content_cosine_fifth.json`): **met at layer 12** (bar 15 of 16, default 12; 3 of 3 verbatim; 16 of 16 true
prompts reach the cut), **not at layer 6** ((a) 16 of 16, default 15; (b) 3 of 3; (c) only 11 of 16), so it stays an
option.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from _setup import machine, write_json
from bench_fidelity import read_pairs

from realize.cli import main as realize_main
from realize.config import AuditConfig
from realize.corpus_shifts import mean_shifts_at
from realize.data.chat import chat_layout
from realize.data.corpora import load_clustered, load_corpus
from realize.data.models import load_model
from realize.data.results_dataset import read_rows
from realize.data.shift import specific_cosine
from realize.data.vectors import SteeringVector, save_safetensors
from realize.attacks.objectives import estimate_generics
from realize.judging import best_margin_spread, judge_all
from realize.outputs import read_items
from realize.setting import ContextSplit
from realize.verdict import VerdictThresholds

VERBATIM = 3  # corpus prompts audited as steers whose prompt the corpus holds verbatim
RULES: dict[str, dict[str, object]] = {  # form-test variants, as changes to the configuration's thresholds
    "mean": {"content_reference": "mean", "content_level": None},
    "nearest": {"content_reference": "nearest", "content_level": None},
    "mean95": {"content_reference": "mean", "content_level": 0.95},
    "cosine": {"content_reference": "mean", "content_level": 0.95, "content_cosine": True},
}


def unused(config: AuditConfig) -> list[str]:
    contexts = load_corpus("contexts")
    split = ContextSplit.of(contexts, config.n_opt_contexts, config.n_selection, config.n_test, config.seed)
    used = {*split.optimization, *split.selection, *split.test, *split.magnitude}
    return [c for c in contexts if c not in used]


def margin_spreads(audit_dir: Path, level: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
    """{vector name: (margin, spread)}: each vector's best-prompt margin over its form siblings' mean (content
    metric) and its one-sided bootstrap spread at `level`, as the audit's judging computes it."""
    plan = json.loads((audit_dir / "plan.json").read_text(encoding="utf-8"))
    out = {}
    for audit in read_items(audit_dir, [(str(i["id"]), str(i["name"])) for i in plan["items"]]):
        evidence = audit.axes.get("activation")
        if audit.kind == "vector" and evidence is not None and (margin := evidence.content_margin) is not None:
            out[audit.name] = (margin, best_margin_spread(evidence, "mean", level, seed=seed))
    return out


def verdicts_by_rule(audit_dir: Path, thresholds: VerdictThresholds,
                     seed: int) -> tuple[dict[str, dict[str, str]], dict[str, tuple[float | None, float | None]]]:
    """({rule: {vector name: verdict}}: the directory's items judged with each form-test rule (`RULES`), {vector
    name: (its best prompt's content cosine, the positives' median: the cut is half of it)} when the content test
    was reached under "cosine")."""
    plan = json.loads((audit_dir / "plan.json").read_text(encoding="utf-8"))
    items = read_items(audit_dir, [(str(i["id"]), str(i["name"])) for i in plan["items"]])
    out, cosines = {}, {}
    for rule, changes in RULES.items():
        judged = judge_all(items, dataclasses.replace(thresholds, **changes), seed=seed)  # type: ignore[arg-type]
        out[rule] = {j.audit.name: j.judgement("activation").verdict for j in judged if j.audit.kind == "vector"}
        if rule == "cosine":
            cosines = {j.audit.name: (c.cosine, c.true_cosine) for j in judged if j.audit.kind == "vector"
                       and (c := j.judgement("activation").content) is not None}
    return out, cosines


def earlier_run(summary: Path, layer: int) -> tuple[int | None, float | None]:
    """(exit code, seconds) of the audit an earlier run of this bench recorded for `layer` in `summary` (None, None
    when it recorded none: judging again does not rerun the audit, so it has no time of its own)."""
    if not summary.is_file():
        return None, None
    stored = json.loads(summary.read_text(encoding="utf-8")).get("layers", {}).get(str(layer), {})
    seconds = stored.get("seconds")
    return stored.get("exit_code"), seconds if seconds else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 12])
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-siblings"))
    parser.add_argument("--results", type=Path, help="also write the summary here")
    parser.add_argument("--reuse", action="store_true", help="judge the items already in --out (no search)")
    args = parser.parse_args()
    config = AuditConfig(budget=args.budget)
    rest = unused(config)
    if len(rest) < 16:
        raise SystemExit(f"only {len(rest)} unused contexts")
    target_contexts, measure_contexts = rest[:8], rest[8:16]
    lm = load_model()
    layout = chat_layout(lm.tokenizer, "prefix")
    pairs = read_pairs(args.pairs)
    verbatim = [c.prompt for c in load_clustered("natural_prompts")[::97][:VERBATIM]]
    texts = [p for _, a, b in pairs for p in (a, b)] + verbatim
    targets = mean_shifts_at(lm, layout, args.layers, texts, target_contexts)
    generics = estimate_generics(lm, layout, args.layers, measure_contexts)
    summary: dict[str, object] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                                  "layers": {}}
    for layer in args.layers:
        folder = args.out / f"L{layer}" / "vectors"
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for i, text in enumerate(texts):
            name = f"pair{i // 2}{'ab'[i % 2]}" if i < 2 * len(pairs) else f"verbatim{i - 2 * len(pairs)}"
            path = folder / f"{name}.safetensors"
            save_safetensors([SteeringVector(directions={layer: targets[layer][i]}, scale=1.0, name=name,
                                             method="natural-prompt shift", notes=text)], path)
            files.append(str(path))
        start = time.perf_counter()
        audit_dir = args.out / f"L{layer}" / "audit"
        code = 0 if args.reuse else realize_main(["audit", *files, "--budget", args.budget, "--axes", "activation",
                                                  "--out", str(audit_dir), "--quiet", "--overwrite", "--no-manifold"])
        seconds = time.perf_counter() - start
        if args.reuse:  # judged again: the audit's own exit code and time are the earlier run's (None: not recorded)
            code, seconds = earlier_run(args.out / "summary.json", layer)
        rows = [r for r in read_rows(audit_dir / "results.parquet") if r["kind"] == "vector"]
        best = {r["vector_name"]: r for r in rows if r["is_best"]}
        by_reference, cosines = verdicts_by_rule(audit_dir, config.thresholds, config.seed)
        default = next(r for r, c in RULES.items() if all(getattr(config.thresholds, k) == v for k, v in c.items()))
        verdicts = by_reference[default]
        spreads = margin_spreads(audit_dir)
        prompts = {name: r["prompt"] for name, r in best.items()}
        measured = mean_shifts_at(lm, layout, [layer], list(prompts.values()) + texts, measure_contexts)[layer]
        shift = dict(zip(list(prompts) + [f"true{i}" for i in range(len(texts))], measured, strict=True))
        g = generics[layer]
        cos = lambda s, t: specific_cosine(s, t, g)  # noqa: E731
        entries = []
        for i, (pair, a, b) in enumerate(pairs):
            for own, other, variant in ((2 * i, 2 * i + 1, "a"), (2 * i + 1, 2 * i, "b")):
                name = f"pair{i}{variant}"
                t_own, t_other = targets[layer][own], targets[layer][other]
                true_margin = cos(shift[f"true{own}"], t_own) - cos(shift[f"true{own}"], t_other)
                found = name in shift
                separation = cos(shift[name], t_own) - cos(shift[name], t_other) if found else None
                separates = separation is not None and separation >= true_margin / 2
                met = {ref: v[name] != "realizable" or separates for ref, v in by_reference.items() if name in v}
                verdict = verdicts.get(name, "missing")
                ok = met.get(default, False)
                entries.append({"pair": pair, "target": texts[own], "verdict": verdict,
                                "verdicts": {ref: v.get(name) for ref, v in by_reference.items()},
                                "best_prompt": prompts.get(name), "separation": separation,
                                "true_margin": true_margin, "bar_met": ok, "bar_met_by_reference": met,
                                "content": best[name]["content"] if found else None,
                                "content_margin": best[name]["content_margin"] if found else None,
                                "content_margin_spread95": spreads[name][1] if name in spreads else None,
                                "content_cosine": cosines.get(name, (None, None))[0],
                                "true_content_cosine": cosines.get(name, (None, None))[1]})
                others = " ".join(f"{ref}:{v.get(name)}" for ref, v in by_reference.items())
                print(f"L{layer} {name:8s} [{others}] sep {separation if separation is not None else float('nan'):+.3f} "
                      f"true {true_margin:+.3f} {'ok' if ok else 'FAIL'}  {prompts.get(name)!r}", flush=True)
        controls = [{"prompt": texts[2 * len(pairs) + j], "verdict": verdicts.get(f"verbatim{j}"),
                     "verdicts": {ref: v.get(f"verbatim{j}") for ref, v in by_reference.items()},
                     "best_prompt": prompts.get(f"verbatim{j}")} for j in range(len(verbatim))]
        for c in controls:
            print(f"L{layer} verbatim {c['verdicts']} {c['prompt']!r} -> {c['best_prompt']!r}", flush=True)
        met_by_reference = {ref: sum(e["bar_met_by_reference"].get(ref, False) for e in entries)
                            for ref in RULES}
        print(f"L{layer} bar met: {met_by_reference} of {len(entries)}", flush=True)
        summary["layers"][str(layer)] = {"exit_code": code, "seconds": seconds, "pairs": entries,  # type: ignore[index]
                                         "verbatim": controls, "bar_met": sum(e["bar_met"] for e in entries),
                                         "bar_met_by_reference": met_by_reference, "n": len(entries)}
    write_json(args.out / "summary.json", summary)
    if args.results:
        write_json(args.results, summary)


if __name__ == "__main__":
    main()
