"""Would a form test against siblings of the *same kind* measure this steer's content? An exploration on the stored
sibling-bench runs, outside the package (its evidence code, and so the shipped calibration, stay as they are).

    python benchmarks/bench_kind_siblings.py --summary benchmarks/results/siblings_content_level.json \
        --pairs benchmarks/sibling_pairs_heldout.tsv benchmarks/sibling_pairs_heldout2.tsv \
        [--json benchmarks/results/siblings_kind.json]

The audit's form siblings swap a content word for the LM's likeliest word at that slot. For a wrong prompt that
swap often changes the *kind* of content: "Format your answer first as a pie." gets "... as a list.", "... as a
table.", so "pie" (a concrete object) beats them on the steer of "Work a lantern into your answer somehow." and
the prompt passes the form test without the steer's content. *Kind siblings* swap the word for the LM proposal (its
top `--top-k` at that slot, the same filters as the audit's) whose hidden state at layer `KIND_LAYER` (the
prompt alone) is closest to the word's ("pie"
-> "cake", "bread", ...): a word of the same kind, so a margin over them asks whether *this* word matters, not
whether a word of its kind does.

For every target of the bench's summary (each pair instruction's mean shift on the bench's 8 target contexts, and
the verbatim corpus controls), the audit's best prompt and the target's own true prompt are measured with both
sibling kinds on the quick preset's test contexts (the audit's own; separation was measured on 8 other ones), in
the audit's content metric (specific cosine after whitening by the natural prompts' shifts on the optimization
contexts; on mean shifts, where the audit averages per-context values). The threshold of each kind is calibrated
the audit's way, on prompts that are not in the test: half the median margin of `--positives` corpus positive
prompts over their own siblings of that kind, each on its own shift (target contexts) measured on the test contexts.

Rule, written before any kind margin was computed: the kind test is worth building into the audit (with a third
held-out pair set, since these two have been seen, and a calibration re-ship) only if, added to the stored
verdicts (a "realizable" stays so only when its best prompt's kind margin also reaches the kind threshold):
(1) the positives' median kind margin is > 0 at both layers; (2) the bar is met on more targets in at least two of
the four set/layer cases and fewer in none; (3) every verbatim control stays "realizable" (12 of 12); (4) at least
half of the "realizable" verdicts whose prompt separates own from sibling are kept.
Outcome (`benchmarks/results/siblings_kind.json`; judged the same on the stored "mean" and "mean95" verdicts): (1)
met (half-median kind margins 0.024 at layer 6, 0.019 at 12; the LM siblings' 0.026 and 0.021); (2) met (bar 10 ->
12 first set layer 12, 13 -> 14 second set layer 12, 14 and 15 unchanged at layer 6 under "mean95"); (3) met (12
of 12); (4) **not met: 2 of 6 kept**. And the kind margin does not tell a true prompt from the audit's found
prompts better than the LM siblings' margin (AUC 0.95 vs 0.93, 0.98 vs 0.98, 0.96 vs 0.96, 0.94 vs 0.98): both
kinds shrink every margin by about a third. So kind siblings are not built into the audit.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from _content import (N_SIBLINGS, added_test_counts, auc_of, content_bench, rejudged, separates, stored_rows,
                      verbatim_controls)
from _setup import machine, write_json
from bench_fidelity import read_pairs

from realize.attacks.siblings import SiblingConfig, content_slots, form_siblings
from realize.corpus_shifts import mean_shifts_at
from realize.data.chat import ChatLayout, encode
from realize.data.models import LoadedModel
from realize.data.shift import project_out

BASELINES = ("mean", "mean95")  # the stored runs' form-test rules the kind test is added to (bench_siblings.RULES)
KIND_LAYER = 8  # the hidden state that says what kind a word is


@torch.no_grad()
def _word_states(lm: LoadedModel, rows: list[list[int]], at: int, layer: int) -> torch.Tensor:
    """(n, d) hidden state at `layer` of each prompt (alone, no chat template, all of one length) at position `at`."""
    out = [lm.model(torch.tensor(rows[s : s + 64]), output_hidden_states=True).hidden_states[layer][:, at].float()
           for s in range(0, len(rows), 64)]
    return torch.cat(out)


def siblings_by_kind(lm: LoadedModel, layout: ChatLayout, text: str, top_k: int,
                     state_layer: int = KIND_LAYER) -> dict[str, list[str]]:
    """{"lm": the audit's form siblings, "kind": the same slots' proposals ranked by the cosine of the swapped
    word's hidden state (layer `state_layer`, the prompt alone) with the replaced word's, first choices of every
    slot first} as texts."""
    tok = lm.tokenizer
    ids = encode(tok, text)
    lm_siblings = form_siblings(lm, layout, ids, SiblingConfig(n=N_SIBLINGS))
    every = form_siblings(lm, layout, ids, SiblingConfig(n=10_000, lm_top_k=top_k))  # each a one-slot swap
    strings = [tok.decode([i]) for i in ids]
    ranked_by_slot = []
    for start, end in content_slots(strings, SiblingConfig()):
        swaps = [list(s) for s in every
                 if len(s) == len(ids) - (end - start) + 1 and list(s[:start]) == ids[:start]
                 and list(s[start + 1:]) == ids[end:]]
        if not swaps:
            continue
        word = _word_states(lm, [ids], end - 1, state_layer)
        states = _word_states(lm, swaps, start, state_layer)
        order = torch.nn.functional.cosine_similarity(states, word, dim=-1).argsort(descending=True).tolist()
        ranked_by_slot.append([swaps[j] for j in order])
    kind: list[list[int]] = []
    for rank in range(max((len(r) for r in ranked_by_slot), default=0)):
        for ranked in ranked_by_slot:
            if rank < len(ranked) and len(kind) < N_SIBLINGS and ranked[rank] not in kind:
                kind.append(ranked[rank])
    return {"lm": [tok.decode(list(s)) for s in lm_siblings], "kind": [tok.decode(s) for s in kind]}


def judge(report: dict) -> None:
    """Adds to each set/layer case of `report` (in place) and prints, for each baseline form-test rule of the stored
    runs (`BASELINES`), the verdicts with the kind test added and the rule's counts; and how well each sibling kind's
    margin tells a true prompt (on its own target) from the audit's found prompts that are not it (AUC, medians)."""
    for case, data in report["cases"].items():
        if case.startswith("positives"):
            continue
        layer = case.split(" L")[1]
        threshold = report["cases"][f"positives L{layer}"]["thresholds"]["kind"]
        rows = data["rows"]
        found = [r["best"] for r in rows if r["best"] is not None and r["best_prompt"] != r["target"]]
        separation = {}
        for kind in ("lm", "kind"):
            true_margins = [r["true"][f"{kind}_margin"] for r in rows if r["pair"]]
            found_margins = [b[f"{kind}_margin"] for b in found if b[f"{kind}_margin"] is not None]
            separation[kind] = {"auc_true_vs_found": auc_of(true_margins, found_margins),
                                "median_true": statistics.median(true_margins),
                                "median_found": statistics.median(found_margins)}
        data["margins"] = separation
        print(f"{case}: margin of true vs found prompts " + "; ".join(
            f"{k}: AUC {v['auc_true_vs_found']:.2f}, medians {v['median_true']:+.3f} vs {v['median_found']:+.3f}"
            for k, v in separation.items()), flush=True)
        data["counts"] = {}
        for baseline in BASELINES:
            def passes(b: dict | None) -> bool:
                return b is not None and b["kind_margin"] is not None and b["kind_margin"] >= threshold

            counts = added_test_counts(rows, baseline, passes, "bar_met_kind")
            for r in rows:
                if r["pair"] and r["verdicts"][baseline] == "realizable" and separates(r):
                    print(f"  {case} [{baseline}] separating 'realizable' {'kept' if passes(r['best']) else 'LOST'}: "
                          f"{r['target']!r} -> {r['best_prompt']!r} (kind margin {r['best']['kind_margin']:+.3f})")
            data["counts"][baseline] = counts
            print(f"{case} [{baseline}]: {counts}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", type=Path, help="bench_siblings results (sets -> layers)")
    parser.add_argument("--pairs", type=Path, nargs=2, help="the first and second sets' pair files")
    parser.add_argument("--top-k", type=int, default=256)
    parser.add_argument("--positives", type=int, default=24)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rejudge", type=Path, help="judge an earlier run's --json again (no model; writes --json)")
    args = parser.parse_args()
    if rejudged(args, judge):
        return
    if args.summary is None or args.pairs is None:
        parser.error("--summary and --pairs are required unless --rejudge is given")
    stored = json.loads(args.summary.read_text(encoding="utf-8"))
    layers = sorted({int(layer) for s in ("first_set", "second_set") for layer in stored[s]["layers"]})
    bench = content_bench(layers, args.positives)
    split, target_contexts, lm, layout = bench.split, bench.target_contexts, bench.lm, bench.layout
    generic_test, positives, verbatim = bench.generic_test, bench.positives, verbatim_controls()
    report: dict[str, object] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                                 "rule": __doc__.split("Rule, ")[1].strip(), "cases": {}}
    sibling_cache: dict[str, dict[str, list[str]]] = {}

    def sibs(text: str) -> dict[str, list[str]]:
        if text not in sibling_cache:
            sibling_cache[text] = siblings_by_kind(lm, layout, text, args.top_k)
        return sibling_cache[text]

    def margins(layer: int, prompts: list[str], targets: torch.Tensor) -> list[dict[str, object]]:
        """Each prompt's content-metric value on its target, and its margin over each kind's siblings' mean."""
        w, g = bench.whitening[layer], generic_test[layer]
        texts = list(dict.fromkeys(t for p in prompts for t in [p, *sibs(p)["lm"], *sibs(p)["kind"]]))
        shifts = dict(zip(texts, mean_shifts_at(lm, layout, [layer], texts, split.test)[layer], strict=True))

        def value(s: torch.Tensor, t: torch.Tensor) -> float:
            a, b = project_out(s, g) @ w, project_out(t, g) @ w
            return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-12))

        out = []
        for prompt, target in zip(prompts, targets, strict=True):
            own = value(shifts[prompt], target)
            row: dict[str, object] = {"prompt": prompt, "value": own}
            for kind in ("lm", "kind"):
                others = [value(shifts[s], target) for s in sibs(prompt)[kind]]
                row[f"{kind}_siblings"] = sibs(prompt)[kind]
                row[f"{kind}_margin"] = own - statistics.fmean(others) if others else None
            out.append(row)
        return out

    thresholds: dict[int, dict[str, float]] = {}
    for layer in layers:
        pos_targets = mean_shifts_at(lm, layout, [layer], positives, target_contexts)[layer]
        rows = margins(layer, positives, pos_targets)
        thresholds[layer] = {k: statistics.median(r[f"{k}_margin"] for r in rows if r[f"{k}_margin"] is not None) / 2
                             for k in ("lm", "kind")}
        report["cases"][f"positives L{layer}"] = {"thresholds": thresholds[layer], "rows": rows}  # type: ignore[index]
        print(f"L{layer} positives: half-median margins {thresholds[layer]}", flush=True)
    for set_name, pair_file in zip(("first_set", "second_set"), args.pairs, strict=True):
        pairs = read_pairs(pair_file)
        texts = [p for _, a, b in pairs for p in (a, b)] + verbatim
        for layer_key, stored_layer in stored[set_name]["layers"].items():
            layer = int(layer_key)
            targets = mean_shifts_at(lm, layout, [layer], texts, target_contexts)[layer]
            entries = stored_layer["pairs"] + stored_layer["verbatim"]
            assert [e.get("target", e.get("prompt")) for e in entries] == texts, "summary and pair file differ"
            found = [i for i, e in enumerate(entries) if e["best_prompt"]]
            best = dict(zip(found, margins(layer, [entries[i]["best_prompt"] for i in found], targets[found]),
                            strict=True))
            rows = stored_rows(entries, texts, len(pairs), [best.get(i) for i in range(len(entries))],
                               margins(layer, texts, targets))
            report["cases"][f"{set_name} L{layer}"] = {"rows": rows}  # type: ignore[index]
    judge(report)
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
