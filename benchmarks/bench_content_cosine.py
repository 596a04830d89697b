"""Does the found prompt's *content part* point where the steer's does? A content cosine for the form test, explored
on the stored sibling-bench runs, outside the package (its evidence code and the shipped calibration stay as they are).

    python benchmarks/bench_content_cosine.py [--json benchmarks/results/content_cosine.json]
    python benchmarks/bench_content_cosine.py --rejudge benchmarks/results/content_cosine.json

The audit's form test asks whether the best prompt p beats its form siblings s_1..s_k on the steer T: a margin
<u(p) - mean u(s_i), u(T)>, u the unit vector in the content metric (specific shift, whitened by the natural prompts'
shifts). That margin is a projection on all of T, so a prompt whose words carry content *of the steer's kind* passes
("Format your answer first as a pie." beats "... as a list." on the steer of "Work a lantern into your answer
somehow.", README "What realizable means"). The content cosine asks a narrower question, scale-free:

    content_cos(p, T) = cos(u(p) - mean u(s_i), u(T) - mean u(s_i))

the angle between what p's words add to its form and what the steer has beyond that form. A true prompt's two
departures are the same up to context noise; a wrong prompt's share only what its kind shares, and a prompt of
another form also carries the form difference in the steer's departure. Calibrated the audit's way, on prompts that
are not in the test: the cut is half the median content cosine of `--positives` corpus positive prompts, each on its
own mean shift (the sibling bench's 8 target contexts) measured with its own siblings on the quick preset's test
contexts. Every prompt and sibling is measured on those test contexts (mean shifts), the targets on the bench's
target contexts, as `bench_kind_siblings.py` does.

Rule, written into this script before any content cosine was computed: a content-cosine form test is worth building
into the audit (with a calibration re-ship, and judged on a fourth held-out pair set, since these three have been
seen) only if, added to the stored default ("mean95") verdicts (a "realizable" stays so only when its best prompt's
content cosine also reaches the cut): (1) the positives' median content cosine is > 0 at both layers; (2) the bar is
met on more targets in at least three of the six set/layer cases (it cannot be met on fewer); (3) every verbatim
control stays "realizable" (18 of 18); (4) at least half of the "realizable" verdicts whose prompt separates own
from sibling are kept, pooled over the six cases. Reported beside it, deciding nothing: how well the content cosine
and the margin tell a true prompt (on its own target) from the audit's found prompts (AUC per case).
Outcome (`benchmarks/results/content_cosine.json`): **not met**: (1) met (positives' median content cosine 0.140 at
layer 6, 0.094 at layer 12: cuts 0.070 and 0.047); (2) met (bar 10 -> 16, 13 -> 16, 13 -> 16 of 16 at layer 12 on
the three sets, 14 -> 16, 15 -> 15, 10 -> 13 at layer 6); (3) met (18 of 18); (4) **not met: 1 of 7 kept**. Read
after the fact: none of the seven separating "realizable" prompts carries its steer's content ("Summarize your
answer super in a table." for the gondola steer, "Give the answer as a brief review." for the toucan), so (4)
guarded the wrong thing; the guard the test needs is that *true* prompts pass it. Measured after the fact too: the
pairs' true prompts, on their own targets, reach the cut 46 of 48 times at layer 12 and 31 of 48 at layer 6 (the
current margin test: 48 and 48).

Confirmation rule, written into this script (with the fourth pair set) after those numbers and before any audit of
the fourth set: the content cosine is worth building into the audit at a layer (with a calibration re-ship) only if,
on `sibling_pairs_heldout4.tsv` audited with the current default (`bench_siblings.py --pairs
benchmarks/sibling_pairs_heldout4.tsv --layers L`, quick budget) and judged here with `--sets fourth` (cuts as
calibrated above), at that layer: (a) the bar with the content cosine added is met on at least 15 of 16 targets
and on more than without it, or on 16 of 16 by both; (b) 3 of 3 verbatim controls stay "realizable"; (c) at least
14 of the 16 true prompts reach the cut.
Outcome (`benchmarks/results/content_cosine_fourth.json`): **not met at either layer, by one target**: bar 11 -> 14
of 16 at layer 12 and 11 -> 14 at layer 6 (rule: 15); (b) 3 of 3 verbatim kept at both; (c) 14 of 16 true prompts
reach the cut at both. So the content cosine is not built into the audit.

`--more-contexts` (a diagnostic, no verdicts): the positives and the true prompts measured on the test contexts plus
the sibling bench's 8 measurement contexts (18), to see whether the cut's reach grows with evidence
(`benchmarks/results/content_cosine_more_contexts.json`): 64 of 64 true prompts at layer 12, 50 of 64 at layer 6
(on 10 contexts: 60 and 45).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from _content import (N_SIBLINGS, added_test_counts, auc_of, content_bench, content_cosine, rejudged, separates,
                      stored_rows, verbatim_controls)
from _setup import machine, write_json
from bench_fidelity import read_pairs
from bench_siblings import unused

from realize.attacks.objectives import estimate_generics
from realize.attacks.siblings import SiblingConfig, form_siblings
from realize.config import AuditConfig
from realize.corpus_shifts import mean_shifts_at
from realize.data.chat import encode
from realize.data.shift import project_out

RESULTS = Path(__file__).parent / "results"
# (case name, stored sibling-bench summary, its key for the set (None: the file is one set), pair file)
SETS = (("first", RESULTS / "siblings_content_level.json", "first_set", "sibling_pairs_heldout.tsv"),
        ("second", RESULTS / "siblings_content_level.json", "second_set", "sibling_pairs_heldout2.tsv"),
        ("third", RESULTS / "siblings_heldout3_quick.json", None, "sibling_pairs_heldout3.tsv"),
        ("third", RESULTS / "siblings_heldout3_L6_quick.json", None, "sibling_pairs_heldout3.tsv"),
        ("fourth", RESULTS / "siblings_heldout4_quick.json", None, "sibling_pairs_heldout4.tsv"),
        ("fifth", RESULTS / "siblings_heldout5_quick.json", None, "sibling_pairs_heldout5.tsv"),
        ("fifth", RESULTS / "siblings_heldout5_L6_quick.json", None, "sibling_pairs_heldout5.tsv"))
BASELINE = "mean95"  # the stored runs' default form-test rule (bench_siblings.RULES)


def stored_cases(names: list[str]) -> list[tuple[str, int, Path, list[dict]]]:
    """[(set name, layer, pair file, the stored entries: pairs then verbatim controls)] of the stored runs of the sets
    `names`."""
    out = []
    for name, path, key, pair_file in SETS:
        if name not in names:
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        for layer, stored in (data[key] if key else data)["layers"].items():
            out.append((name, int(layer), Path(__file__).parent / pair_file, stored["pairs"] + stored["verbatim"]))
    return out


def judge(report: dict) -> dict:
    """Adds to each set/layer case of `report` (in place) the verdicts with the content-cosine test added to the stored
    default's, the rule's counts and the AUCs; returns the rule's pooled outcome."""
    pooled = {"cases_more": 0, "verbatim": 0, "verbatim_kept": 0, "separating": 0, "separating_kept": 0}
    medians = {}
    for case, data in report["cases"].items():
        layer = int(case.split(" L")[1])
        if case.startswith("positives"):
            medians[layer] = data["median_content_cos"]
            continue
        cut = report["cases"][f"positives L{layer}"]["cut"]
        rows = data["rows"]
        found = [r["best"] for r in rows if r["best"] is not None and r["best_prompt"] != r["target"]]
        data["auc_true_vs_found"] = {
            m: auc_of([r["true"][m] for r in rows if r["pair"] and r["true"][m] is not None],
                    [b[m] for b in found if b[m] is not None]) for m in ("margin", "content_cos")}
        margin_cut = report["cases"][f"positives L{layer}"]["median_margin"] / 2
        true_rows = [r["true"] for r in rows if r["pair"] and r["true"]["content_cos"] is not None]

        def passes(b: dict | None) -> bool:
            return b is not None and b["content_cos"] is not None and b["content_cos"] >= cut

        counts = {**added_test_counts(rows, BASELINE, passes, "bar_met_with_cosine"),
                  "pairs": sum(r["pair"] for r in rows),
                  "true_reach_cosine": sum(t["content_cos"] >= cut for t in true_rows),
                  "true_reach_margin": sum(t["margin"] >= margin_cut for t in true_rows)}
        for r in rows:
            verdict = r["verdicts"][BASELINE]
            r["verdict_with_cosine"] = verdict if verdict != "realizable" or passes(r["best"]) else "form realizable"
        data["counts"] = counts
        pooled["cases_more"] += counts["bar_met_with_cosine"] > counts["bar_met"]
        for k_pool, k_case in (("verbatim", "verbatim"), ("verbatim_kept", "verbatim_kept"),
                               ("separating", "separating_realizable"), ("separating_kept", "separating_kept")):
            pooled[k_pool] += counts[k_case]
        print(f"{case}: bar {counts['bar_met']} -> {counts['bar_met_with_cosine']} of "
              f"{counts['pairs']}; true prompts reaching the cut {counts['true_reach_cosine']} (the margin's "
              f"{counts['true_reach_margin']}); verbatim kept {counts['verbatim_kept']} of {counts['verbatim']}; "
              f"separating 'realizable' kept {counts['separating_kept']} of {counts['separating_realizable']}; AUC "
              f"true vs found: margin {data['auc_true_vs_found']['margin']:.2f}, content cosine "
              f"{data['auc_true_vs_found']['content_cos']:.2f}", flush=True)
        for r in rows:
            if r["pair"] and r["verdicts"][BASELINE] == "realizable":
                b = r["best"]
                print(f"    {r['target']!r} -> {r['best_prompt']!r}: cos {b['content_cos']:+.3f} (true prompt "
                      f"{r['true']['content_cos']:+.3f}), separates "
                      f"{separates(r)}, {r['verdict_with_cosine']}", flush=True)
    seen = [c for c in report["cases"] if not c.startswith(("positives", "fourth", "fifth"))]
    confirmation = {case: {
        "(a) bar with the cosine >= 15 of 16 and above without it, or 16 and 16":
            c["bar_met_with_cosine"] >= 15 and (c["bar_met_with_cosine"] > c["bar_met"] or c["bar_met"] == 16),
        "(b) 3 of 3 verbatim kept": c["verbatim_kept"] == c["verbatim"] == 3,
        "(c) >= 14 of 16 true prompts reach the cut": c["true_reach_cosine"] >= 14}
        for case, data in report["cases"].items() if case.startswith(("fourth", "fifth")) for c in [data["counts"]]}
    if confirmation:
        report["confirmation"] = {case: {"rule": rule, "met": all(rule.values())} for case, rule in confirmation.items()}
        print(json.dumps(report["confirmation"], indent=1), flush=True)
    if not seen:
        return report.get("confirmation", {})
    outcome = {
        "(1) positives' median content cosine > 0 at both layers": all(m > 0 for m in medians.values()),
        "(2) bar met on more targets in >= 3 of 6 cases": pooled["cases_more"] >= 3,
        "(3) every verbatim control stays realizable": pooled["verbatim_kept"] == pooled["verbatim"],
        "(4) >= half of the separating 'realizable' kept": 2 * pooled["separating_kept"] >= pooled["separating"]}
    report["outcome"] = {"pooled": pooled, "rule": outcome, "met": all(outcome.values())}
    print(json.dumps(report["outcome"], indent=1), flush=True)
    return report["outcome"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["first", "second", "third"],
                        choices=sorted({name for name, *_ in SETS}))
    parser.add_argument("--positives", type=int, default=24)
    parser.add_argument("--more-contexts", action="store_true",
                        help="diagnostic: true prompts and positives only, measured on the test contexts plus the "
                             "sibling bench's 8 measurement contexts (18): does the cut's reach grow with evidence?")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rejudge", type=Path, help="judge an earlier run's --json again (no model; writes --json)")
    args = parser.parse_args()
    if rejudged(args, judge):
        return
    cases = stored_cases(args.sets)
    layers = sorted({layer for _, layer, _, _ in cases})
    bench = content_bench(layers, args.positives)
    split, target_contexts, lm, layout = bench.split, bench.target_contexts, bench.lm, bench.layout
    tok, positives, verbatim = lm.tokenizer, bench.positives, verbatim_controls()

    found = [] if args.more_contexts else [e["best_prompt"] for *_, es in cases for e in es if e["best_prompt"]]
    siblings: dict[str, list[str]] = {}
    for text in dict.fromkeys([*positives, *(e.get("target", e.get("prompt")) for *_, es in cases for e in es),
                               *found]):
        siblings[text] = [tok.decode(list(s)) for s in form_siblings(lm, layout, encode(tok, text),
                                                                     SiblingConfig(n=N_SIBLINGS))]
    texts = list(dict.fromkeys(t for p, sibs in siblings.items() for t in (p, *sibs)))
    print(f"{len(siblings)} prompts, {len(texts)} texts with their siblings", flush=True)
    contexts, generic = list(split.test), bench.generic_test
    if args.more_contexts:  # the bench's measurement contexts: disjoint from the target contexts and the audit's
        contexts += unused(AuditConfig(budget="quick"))[8:16]
        generic = estimate_generics(lm, layout, layers, contexts)
    shifts = mean_shifts_at(lm, layout, layers, texts, contexts, show_progress=True)
    shift_of = {layer: dict(zip(texts, shifts[layer], strict=True)) for layer in layers}

    def unit(x: torch.Tensor, layer: int) -> torch.Tensor:
        v = project_out(x, generic[layer]) @ bench.whitening[layer]
        return v / v.norm().clamp_min(1e-12)

    def measure(layer: int, prompt: str, target: torch.Tensor) -> dict[str, object]:
        """The prompt's margin over its siblings' mean and its content cosine on `target` (content metric)."""
        u_p, u_t = unit(shift_of[layer][prompt], layer), unit(target, layer)
        sibs = siblings[prompt]
        row: dict[str, object] = {"prompt": prompt, "siblings": sibs, "value": float(u_p @ u_t)}
        if not sibs:
            return {**row, "margin": None, "content_cos": None}
        u_s = torch.stack([unit(shift_of[layer][s], layer) for s in sibs])
        return {**row, "margin": float((u_p - u_s.mean(0)) @ u_t), "content_cos": content_cosine(u_p, u_s, u_t)}

    report: dict[str, object] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                                 "rule": __doc__.split("Rule, ")[1].strip(), "cases": {}}
    for layer in layers:
        targets = mean_shifts_at(lm, layout, [layer], positives, target_contexts)[layer]
        rows = [measure(layer, p, t) for p, t in zip(positives, targets, strict=True)]
        cos = [r["content_cos"] for r in rows if r["content_cos"] is not None]
        report["cases"][f"positives L{layer}"] = {  # type: ignore[index]
            "median_content_cos": statistics.median(cos), "cut": statistics.median(cos) / 2,
            "median_margin": statistics.median(r["margin"] for r in rows if r["margin"] is not None), "rows": rows}
        print(f"L{layer} positives: median content cosine {statistics.median(cos):+.3f}", flush=True)
    for name, layer, pair_file, entries in cases:
        pairs = read_pairs(pair_file)
        texts_here = [p for _, a, b in pairs for p in (a, b)] + verbatim
        assert [e.get("target", e.get("prompt")) for e in entries] == texts_here, f"{pair_file}: summary differs"
        targets = mean_shifts_at(lm, layout, [layer], texts_here, target_contexts)[layer]
        true = [measure(layer, text, t) for text, t in zip(texts_here, targets, strict=True)]
        if args.more_contexts:  # no verdicts: the bar's separation was measured on the added contexts
            cut = report["cases"][f"positives L{layer}"]["cut"]  # type: ignore[index]
            reach = sum(t["content_cos"] >= cut for t in true[: 2 * len(pairs)] if t["content_cos"] is not None)
            report["cases"][f"{name} set L{layer}"] = {"true": true, "true_reach": reach}  # type: ignore[index]
            print(f"{name} set L{layer}: true prompts reaching the cut {reach} of {2 * len(pairs)}", flush=True)
            continue
        rows = stored_rows(entries, texts_here, len(pairs),
                           [measure(layer, e["best_prompt"], t) if e["best_prompt"] else None
                            for e, t in zip(entries, targets, strict=True)], true)
        report["cases"][f"{name} set L{layer}"] = {"rows": rows}  # type: ignore[index]
    if not args.more_contexts:
        judge(report)
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
