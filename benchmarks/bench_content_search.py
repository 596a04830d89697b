"""Does the search find content? Natural GCG without and with content moves (`attacks.content`), side by side.

    OMP_NUM_THREADS=1 python benchmarks/bench_content_search.py [--layers 6 12] [--pairs 10] [--both]
        [--steps 8] [--width 40] [--content-share 0.3] [--plain 4] [--random 2] [--out ...json]

Dev set: `benchmarks/content_siblings.tsv`, pairs of same-template instructions that differ in their content, on
themes absent from every shipped corpus. The audit's context split (`ContextSplit.of`, the default preset's sizes,
seed 0) gives three disjoint sets of 8:
- optimization contexts: the search's own (and the retrieval pool's cached corpus shifts, as in the audit);
- target contexts (the split's selection set): each dev prompt's mean shift there is its target;
- evaluation contexts (the first 8 test contexts): every number in the table (specific cosine with g estimated
  there), so no reported number comes from contexts that chose anything.
Each run starts where the audit's search starts (the best retrieved natural prompt for the target) and both arms
use the same budget, seeds and start. A row reports the search's best prompt (lowest loss + fluency weight * CE on
the optimization contexts), its CE (the search's own fluency measure, nats/token; no realism judge), its specific
cosine to its own target and to the sibling's target, whether it carries the target's content word (the TSV's
stem, case-insensitive) and the margin own - sibling. References: the true prompt and its sibling on the same
target. Plain targets (benchmarks/heldout_targets.tsv rows) and random directions from the layer's natural
subspace (the audit's nulls) check that content moves do not worsen the search, nor make it fit noise better.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from _setup import machine, write_json

from realize.attacks.content import build_lexicon, lexicon_words, register_lexicon
from realize.attacks.fluency import encode_head, lm_head_ids, prompt_ce
from realize.attacks.natural import NaturalConfig
from realize.attacks.natural import run as natural_run
from realize.attacks.objectives import ActivationObjectiveConfig, ActivationShiftObjective, estimate_generics
from realize.data.models import model_digest as model_fingerprint
from realize.setting import ContextSplit
from realize.corpus_shifts import corpus_shifts_at, mean_shifts_at, retrieval_losses
from realize.data.chat import chat_layout, encode
from realize.data.corpora import load_corpus, read_clustered_file
from realize.data.models import cache_root, load_model
from realize.data.shift import specific_cosine
from realize.targets import natural_nulls

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Row:
    group: str  # pair id, "plain" or "random"
    name: str  # content stem, cluster or "random.k"
    prompt: str  # the prompt whose shift is the target ("" for random)
    sibling: int | None  # index of the sibling row (pairs only)


def read_pairs(path: Path) -> list[Row]:
    lines = [ln.rstrip("\n") for ln in path.read_text().split("\n") if ln.strip() and not ln.startswith("#")]
    cells = [ln.split("\t") for ln in lines[1:]]
    rows = []
    for i, (pair, stem, prompt) in enumerate(cells):
        j = i + 1 if i % 2 == 0 else i - 1
        if cells[j][0] != pair:
            raise ValueError(f"{path}: row {i + 2}: every pair needs exactly two consecutive rows")
        rows.append(Row(pair, stem, prompt, j))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, nargs="+", default=[6, 12])
    ap.add_argument("--pairs", type=int, default=10, help="first N pairs of the dev set")
    ap.add_argument("--both", action="store_true", help="both rows of a pair as targets (default: the first)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--width", type=int, default=40)
    ap.add_argument("--content-share", type=float, default=0.3)
    ap.add_argument("--content-top-k", type=int, default=12)
    ap.add_argument("--content-span", type=int, default=3)
    ap.add_argument("--content-draws", type=int, default=4)
    ap.add_argument("--content-connector", type=float, default=0.5)
    ap.add_argument("--lexicon-words", type=int, default=30000)
    ap.add_argument("--plain", type=int, default=4, help="rows of heldout_targets.tsv as plain targets")
    ap.add_argument("--random", type=int, default=2, help="random directions per layer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/content_search.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(args.seed)

    lm = load_model()
    tok = lm.tokenizer
    layout = chat_layout(tok)
    layers = sorted(args.layers)
    fingerprint = model_fingerprint(lm)
    split = ContextSplit.of(load_corpus("contexts"), 8, 8, 16, args.seed)  # the default preset's split
    opt, target_ctx, eval_ctx = split.optimization, split.selection, split.test[:8]
    g_opt = estimate_generics(lm, layout, layers, opt)
    g_eval = estimate_generics(lm, layout, layers, eval_ctx)
    corpora = corpus_shifts_at(lm, layout, layers, opt, fingerprint=fingerprint,
                               cache_dir=cache_root() / "corpus_shifts", show_progress=True)

    pairs = read_pairs(HERE / "content_siblings.tsv")[: 2 * args.pairs]
    chosen = [i for i in range(len(pairs)) if args.both or i % 2 == 0]
    plain = [Row("plain", r.cluster, r.prompt, None) for r in read_clustered_file(HERE / "heldout_targets.tsv")]
    plain = plain[: args.plain]
    prompts = [r.prompt for r in pairs] + [r.prompt for r in plain]
    targets = mean_shifts_at(lm, layout, layers, prompts, target_ctx) if prompts else {}
    gen = torch.Generator().manual_seed(args.seed + 99)
    randoms: dict[int, torch.Tensor] = {}
    for i in layers:
        rows = corpora[i].select("natural_prompts")[0]
        norm = float(targets[i][: len(pairs)].norm(dim=1).mean()) if pairs else 5.0
        randoms[i] = natural_nulls(corpora[i].shifts[rows], args.random, norm, gen) if args.random else None

    t0 = time.perf_counter()
    lexicon = build_lexicon(lm, layout, layers, lexicon_words(args.lexicon_words), cache_dir=cache_root() / "lexicon",
                            fingerprint=fingerprint, show_progress=True)
    lexicon_seconds = time.perf_counter() - t0
    print(f"lexicon: {len(lexicon.words)} words at layers {layers} in {lexicon_seconds:.0f} s (cached after)",
          flush=True)

    eval_ids = [encode(tok, c) for c in eval_ctx]
    head = encode_head(lm.model, lm_head_ids(layout))
    natural_rows = corpora[layers[-1]].select("natural_prompts")[0]

    def evaluate(ids: tuple[int, ...], layer: int) -> torch.Tensor:
        probe = ActivationShiftObjective(lm.model, tok, layout, torch.ones(lm.hidden_size), layer, eval_ids)
        return probe.per_context_shifts(torch.tensor([list(ids)]))[0].mean(dim=0).cpu()

    def spec(shift: torch.Tensor, target: torch.Tensor, layer: int) -> float:
        return specific_cosine(shift, target, g_eval[layer])

    base = dict(steps=args.steps, width=args.width, max_frontier=6)
    arms = {"before": NaturalConfig(**base, seed=args.seed),
            "after": NaturalConfig(**base, seed=args.seed, content_share=args.content_share,
                                   content_top_k=args.content_top_k, content_span=args.content_span,
                                   content_connector=args.content_connector, content_words=args.lexicon_words,
                                   content_draws=args.content_draws)}
    results = []
    jobs: list[tuple[int, str, str, torch.Tensor, int | None]] = []  # (layer, group, name, target, row index)
    for layer in layers:
        jobs += [(layer, pairs[i].group, pairs[i].name, targets[layer][i], i) for i in chosen]
        jobs += [(layer, "plain", r.name, targets[layer][len(pairs) + k], None) for k, r in enumerate(plain)]
        if randoms[layer] is not None:
            jobs += [(layer, "random", f"random.{k}", t, None) for k, t in enumerate(randoms[layer])]
    for layer, group, name, target, row in jobs:
        objective = ActivationShiftObjective(lm.model, tok, layout, target, layer, [encode(tok, c) for c in opt],
                                             generic=g_opt[layer], config=ActivationObjectiveConfig())
        losses = retrieval_losses(corpora[layer].shifts[natural_rows], target, g_opt[layer])
        start = tuple(encode(tok, corpora[layer].prompts[natural_rows[int(losses.argmin())]]))
        entry: dict[str, object] = {"layer": layer, "group": group, "name": name,
                                    "start": tok.decode(list(start))}
        sibling_target = None
        if row is not None:
            sib = pairs[row].sibling
            sibling_target = targets[layer][sib]
            true_shift = evaluate(tuple(encode(tok, pairs[row].prompt)), layer)
            sib_shift = evaluate(tuple(encode(tok, pairs[sib].prompt)), layer)
            entry.update(prompt=pairs[row].prompt, sibling_prompt=pairs[sib].prompt,
                         true_own=spec(true_shift, target, layer), true_sibling=spec(true_shift, sibling_target, layer),
                         sibling_on_target=spec(sib_shift, target, layer))
        elif group == "plain":
            entry["prompt"] = next(r.prompt for r in plain if r.name == name)
        for arm, config in arms.items():
            register_lexicon(objective, lm, layout, config.content_words, lexicon)
            result = natural_run(objective, lm, layout, config, init=start)
            shift = evaluate(result.best_ids, layer)
            ce = float(prompt_ce(lm.model, head, torch.tensor([list(result.best_ids)]))[0])
            steps = len(result.trajectory)
            out = {"prompt": result.best_prompt, "ce": ce, "own": spec(shift, target, layer),
                   "seconds": result.seconds, "seconds_per_step": result.seconds / max(steps, 1),
                   "candidates_per_s": result.n_evaluations / max(result.seconds, 1e-9),
                   "n_evaluations": result.n_evaluations}
            if sibling_target is not None:
                out["sibling"] = spec(shift, sibling_target, layer)
                out["margin"] = out["own"] - out["sibling"]
                out["has_content"] = name.lower() in result.best_prompt.lower()
            entry[arm] = out
        results.append(entry)
        print(_line(entry), flush=True)
    summary = _summary(results, layers)
    print(_table(results))
    print(summary)
    write_json(args.out, {"args": vars(args), "machine": machine(), "lexicon_words": len(lexicon.words),
                          "lexicon_seconds": lexicon_seconds, "split": {"optimization": opt, "target": target_ctx,
                                                                         "evaluation": eval_ctx},
                          "rows": results, "summary": summary})


def _line(e: dict) -> str:
    b, a = e["before"], e["after"]
    if "margin" in b:
        return (f"L{e['layer']} {e['name']:<11} before {b['own']:.3f}/{b['sibling']:.3f} m{b['margin']:+.3f} "
                f"{'C' if b['has_content'] else '-'} {b['prompt']!r} | after {a['own']:.3f}/{a['sibling']:.3f} "
                f"m{a['margin']:+.3f} {'C' if a['has_content'] else '-'} {a['prompt']!r} "
                f"(true {e['true_own']:.3f}, sibling {e['sibling_on_target']:.3f})")
    return f"L{e['layer']} {e['name']:<11} before {b['own']:.3f} {b['prompt']!r} | after {a['own']:.3f} {a['prompt']!r}"


def _table(results: list[dict]) -> str:
    head = ("| layer | target | true own/sib | before: best prompt | CE | own | sib | margin | content | "
            "after: best prompt | CE | own | sib | margin | content |")
    lines = [head, "|" + "---|" * 16]
    for e in results:
        b, a = e["before"], e["after"]
        ref = f"{e['true_own']:.2f}/{e['true_sibling']:.2f}" if "true_own" in e else ""

        def cells(x: dict) -> str:
            if "margin" not in x:
                return f"{x['prompt']} | {x['ce']:.2f} | {x['own']:.3f} | | | |"
            return (f"{x['prompt']} | {x['ce']:.2f} | {x['own']:.3f} | {x['sibling']:.3f} | {x['margin']:+.3f} | "
                    f"{'yes' if x['has_content'] else 'no'} |")

        lines.append(f"| {e['layer']} | {e['name']} | {ref} | {cells(b)} {cells(a)}")
    return "\n".join(lines)


def _summary(results: list[dict], layers: list[int]) -> dict[str, object]:
    out: dict[str, object] = {}
    for layer in layers:
        for group in ("pairs", "plain", "random"):
            rows = [e for e in results if e["layer"] == layer and (e["group"] == group if group != "pairs" else
                                                                   e["group"] not in ("plain", "random"))]
            if not rows:
                continue
            s: dict[str, object] = {"n": len(rows)}
            for arm in ("before", "after"):
                s[f"{arm}_own"] = sum(e[arm]["own"] for e in rows) / len(rows)
                s[f"{arm}_candidates_per_s"] = sum(e[arm]["candidates_per_s"] for e in rows) / len(rows)
                s[f"{arm}_seconds_per_step"] = sum(e[arm]["seconds_per_step"] for e in rows) / len(rows)
                if group == "pairs":
                    s[f"{arm}_margin"] = sum(e[arm]["margin"] for e in rows) / len(rows)
                    s[f"{arm}_content"] = sum(e[arm]["has_content"] for e in rows)
            out[f"L{layer}/{group}"] = s
    return out


if __name__ == "__main__":
    main()
