"""How large is the form-test margin of a prompt whose content is *not* the steer's? A wrong-content null for the
content test, measured outside the package (its evidence code and the shipped calibration stay as they are).

    python benchmarks/bench_margin_null.py --layers 12 6 --kind-results benchmarks/results/siblings_kind.json \
        [--json benchmarks/results/margin_null.json]

The audit's form test calibrates the margin (best prompt minus its form siblings, whitened specific cosine, test
contexts) by content-carrying prompts only: it asks for half the positives' median margin. Nothing says what
margin a prompt of the wrong content reaches, and on the held-out sibling pairs the audit's wrong-content prompts
reach 0.01-0.03, where that cut lies (`bench_kind_siblings.py`). Here, for each of `--positives` corpus positive
prompts (their own clusters, none shared with the retrieval corpus), the target is its mean shift on the sibling
bench's 8 target contexts; the *wrong-content* prompt is the retrieval corpus's natural prompt closest to it in the
content metric on the *selection* contexts (another cluster by construction; chosen there so that its margin is not
measured on the contexts that chose it); both prompts' margins over their form
siblings are measured as `bench_kind_siblings.py` measures them. The null cut is the wrong-content margins' 95th
percentile per layer. It is then applied to the margins of the sibling bench's true prompts and found prompts
(`--kind-results`).

Rule, written before any wrong-content margin was computed: a null-calibrated form test is worth building into the
audit (with a calibration re-ship, and judged on the third held-out pair set) only if, at both layers: (a) at least
90 % of the pair sets' true prompts reach the null cut; (b) fewer of the found prompts behind a "realizable" verdict
that does not separate own from sibling reach it than reach the half-median cut; (c) every verbatim control reaches
it.
Outcome (`benchmarks/results/margin_null.json`): **not met** ((a) 50 % and 75 % of the true prompts reach the null
cut at layer 12, 75 % and 56 % at layer 6; (c) 2 of 3 verbatim controls at layer 12; (b) held: 1 of 9 non-separating
"realizable" prompts at layer 12 and 0 of 3 at layer 6 reach it). The numbers behind it: the null cut is 0.072 at
layer 12 and 0.077 at layer 6; the audit's cut (half the positives' median, 0.021 and 0.026) passes 7 of 24
wrong-content prompts at layer 12 (their median 0.013) and 12 of 24 at layer 6 (median 0.025); own vs wrong-content
margins give AUC 0.85 and 0.78. (A first run chose the wrong-content prompt on the test contexts its margin was
measured on, which inflated it: 13 of 24 at both layers.)

The same rows also carry each prompt's content cosine (`bench_content_cosine.py`; reported, deciding nothing here):
its cut (half the own prompts' median: 0.047 at layer 12, 0.070 at layer 6, equal to that script's) lets **0 of 24**
wrong-content prompts through at layer 12 and 4 of 24 at layer 6 (the margin's cut: 7 and 12); own vs wrong-content
AUC 0.97 and 0.82 (the margin's 0.85 and 0.78). Rerunning this script reproduces every margin number above to 1e-6.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from _setup import machine, write_json
from _content import N_SIBLINGS, auc_of, content_bench, content_cosine, rejudged, separates

from realize.attacks.objectives import estimate_generics
from realize.attacks.siblings import SiblingConfig, form_siblings
from realize.corpus_shifts import mean_shifts_at
from realize.data.chat import encode
from realize.data.shift import project_out


def _quantile(values: list[float], q: float) -> float:
    return float(torch.tensor(values).quantile(q))


def summarize(rows: list[dict], kind_results: dict, layer: int) -> dict:
    """One layer's own and wrong-content margins (`rows`) -> the cuts, their separation, and the cuts applied to the
    sibling bench's prompts at that layer (`kind_results`: bench_kind_siblings.py's --json)."""
    own = [r["own"]["margin"] for r in rows if r["own"]["margin"] is not None]
    null = [r["wrong"]["margin"] for r in rows if r["wrong"]["margin"] is not None]
    cuts = {"half_median": statistics.median(own) / 2, "null95": _quantile(null, 0.95)}
    applied = {}
    for case, data in kind_results["cases"].items():
        if not case.endswith(f" L{layer}") or case.startswith("positives"):
            continue
        true = [r["true"]["lm_margin"] for r in data["rows"] if r["pair"]]
        verbatim = [r["best"]["lm_margin"] for r in data["rows"] if not r["pair"] and r["best"]]
        wrong_found = [r["best"]["lm_margin"] for r in data["rows"] if r["pair"] and r["best"]
                       and r["verdicts"]["mean95"] == "realizable" and not separates(r)]
        applied[case] = {name: {"true_reach": sum(m >= cut for m in true) / len(true),
                                "verbatim_reach": f"{sum(m >= cut for m in verbatim)} of {len(verbatim)}",
                                "non_separating_realizable_reach": f"{sum(m >= cut for m in wrong_found)} of "
                                                                   f"{len(wrong_found)}"}
                         for name, cut in cuts.items()}
        print(f"L{layer} {case}: {applied[case]}", flush=True)
    cos_own = [r["own"]["content_cos"] for r in rows if r["own"].get("content_cos") is not None]
    cos_null = [r["wrong"]["content_cos"] for r in rows if r["wrong"].get("content_cos") is not None]
    cos_cut = statistics.median(cos_own) / 2 if cos_own else None
    content_cos = {} if not cos_own else {
        "own_median": statistics.median(cos_own), "null_median": statistics.median(cos_null), "cut": cos_cut,
        "wrong_reaching_cut": f"{sum(c >= cos_cut for c in cos_null)} of {len(cos_null)}",
        "auc_own_vs_wrong": auc_of(cos_own, cos_null)}
    if content_cos:
        print(f"L{layer} content cosine (bench_content_cosine.py): {content_cos}", flush=True)
    summary = {"content_cos": content_cos, "own_median": statistics.median(own), "null_median": statistics.median(null),
               "auc_own_vs_wrong": auc_of(own, null),
               "wrong_reaching_half_median": f"{sum(m >= cuts['half_median'] for m in null)} of {len(null)}",
               "null_quantiles": {q: _quantile(null, q) for q in (0.5, 0.9, 0.95)}, "cuts": cuts,
               "applied": applied, "rows": rows}
    print(f"L{layer}: own median {summary['own_median']:+.3f}, wrong-content median {summary['null_median']:+.3f}, "
          f"cuts {cuts}, AUC own vs wrong {summary['auc_own_vs_wrong']:.2f}, wrong-content prompts reaching the "
          f"audit's cut {summary['wrong_reaching_half_median']}", flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[12, 6])
    parser.add_argument("--kind-results", type=Path, required=True, help="bench_kind_siblings.py's --json")
    parser.add_argument("--positives", type=int, default=24)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rejudge", type=Path, help="summarize an earlier run's --json again (no model)")
    args = parser.parse_args()
    kind_results = json.loads(args.kind_results.read_text(encoding="utf-8"))
    if rejudged(args, lambda report: report["layers"].update(
            {layer: summarize(data["rows"], kind_results, int(layer)) for layer, data in report["layers"].items()})):
        return
    bench = content_bench(args.layers, args.positives)
    split, target_contexts, lm, layout = bench.split, bench.target_contexts, bench.lm, bench.layout
    generic_selection = estimate_generics(lm, layout, args.layers, split.selection)
    generic_test, positives = bench.generic_test, bench.positives
    natural = bench.corpora[args.layers[0]].select("natural_prompts")[1]
    natural_selection = mean_shifts_at(lm, layout, args.layers, natural, split.selection)  # picks (never reported)
    targets = mean_shifts_at(lm, layout, args.layers, positives, target_contexts)
    metrics = bench.whitening

    def embed(s: torch.Tensor, layer: int, generic: torch.Tensor) -> torch.Tensor:
        """(n, d) shifts -> (n, d) unit rows in the content metric at `layer` (`generic` removed first)."""
        x = project_out(s, generic) @ metrics[layer]
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    wrong = {layer: [natural[int((embed(natural_selection[layer], layer, generic_selection[layer])
                                  @ embed(t[None], layer, generic_selection[layer])[0]).argmax())]
                     for t in targets[layer]] for layer in args.layers}
    texts = list(dict.fromkeys(positives + [p for prompts in wrong.values() for p in prompts]))
    siblings = {text: [lm.tokenizer.decode(list(s)) for s in form_siblings(
        lm, layout, encode(lm.tokenizer, text), SiblingConfig(n=N_SIBLINGS))] for text in texts}
    measured = list(dict.fromkeys(texts + [s for text in texts for s in siblings[text]]))
    shifts = mean_shifts_at(lm, layout, args.layers, measured, split.test)  # every reported number: test contexts
    row_of = {text: i for i, text in enumerate(measured)}
    report: dict[str, object] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                                 "rule": __doc__.split("Rule, ")[1].strip(), "layers": {}}
    for layer in args.layers:
        rows = []
        for prompt, wrong_prompt, target in zip(positives, wrong[layer], targets[layer], strict=True):
            pair = {}
            for role, text in (("own", prompt), ("wrong", wrong_prompt)):
                chosen = [row_of[t] for t in [text, *siblings[text]]]
                units = embed(shifts[layer][chosen], layer, generic_test[layer])
                unit_target = embed(target[None], layer, generic_test[layer])[0]
                values = (units @ unit_target).tolist()
                pair[role] = {"prompt": text, "value": values[0],
                              "margin": values[0] - statistics.fmean(values[1:]) if siblings[text] else None,
                              "content_cos": content_cosine(units[0], units[1:], unit_target)}
            rows.append(pair)
            print(f"L{layer} own {pair['own']['margin']:+.3f} wrong {pair['wrong']['margin'] or float('nan'):+.3f} "
                  f"{prompt!r} -> {wrong_prompt!r}", flush=True)
        summary = summarize(rows, kind_results, layer)
        report["layers"][str(layer)] = summary  # type: ignore[index]
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
