"""Can natural-prompt retrieval solve the positive controls? A check that their themes are absent from the corpus.

    OMP_NUM_THREADS=1 python benchmarks/check_positive_themes.py [--layer 12] [--cache /tmp/theme_shifts.pt]

For every prompt of `positive_prompts` and `benchmarks/heldout_targets.tsv`: its mean shift on 8 contexts (set A,
the optimization contexts of `benchmarks/_setup.py`) is the target; every `natural_prompts` prompt is scored by
the specific cosine of its shift on A with that target (g from `generic_prompts` on A), as retrieval would choose.
Reported per target: the best natural prompt, its specific cosine on A (the number retrieval reaches) and on 8
other contexts (set B, held-out: the natural prompt's shift on B against the fixed target), and the target
prompt's own shift on B against the target (what the true prompt reaches, the ceiling). Benchmark targets are also
scored against the positive prompts.

Every cosine is computed twice: with g projected out (the tool's specific cosine) and with g and the mean shift of
all natural prompts projected out (at layer 12 the natural prompts share a direction beyond g, so the first leaves
~0.5 specific cosine between unrelated natural prompts). Reference, from the natural prompts themselves: each natural prompt as the target, retrieval restricted to other
clusters (what a target with no paraphrase in the corpus gets) and to its own cluster (what a paraphrase gives).
A positive whose best retrieval sits well above the other-cluster reference, or whose best match is a paraphrase
by meaning, is suspect. Shifts and g are cached by prompt text (`--cache`), so editing a few prompts recomputes
only those. Writes benchmarks/results/positive_themes.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from _setup import machine, write_json
from tqdm import tqdm

from realize.attacks.objectives import estimate_generic
from realize.data.chat import chat_layout, encode
from realize.data.corpora import load_clustered, load_corpus, read_clustered_file, split_contexts
from realize.data.models import load_model
from realize.data.shift import mean_shift, prompt_shifts

ROOT = Path(__file__).resolve().parents[1]


def _shifts(lm, layout, layer: int, prompts: list[str], contexts: list[str], cache: dict[str, torch.Tensor],
            chunk: int = 8) -> torch.Tensor:
    """(len(prompts), d) mean shifts on `contexts`; `cache` maps prompt text -> shift and is filled in place."""
    todo = [p for p in dict.fromkeys(prompts) if p not in cache]
    ctx = [encode(lm.tokenizer, c) for c in contexts]
    pad = int(lm.tokenizer.pad_token_id or 0)
    for start in tqdm(range(0, len(todo), chunk), desc="shifts", disable=not todo):
        batch = todo[start : start + chunk]
        deltas = prompt_shifts(lm.model, layout, [encode(lm.tokenizer, p) for p in batch], ctx, layer, pad_id=pad)
        cache.update({p: mean_shift(d) for p, d in zip(batch, deltas, strict=True)})
    return torch.stack([cache[p] for p in prompts])


def _cos(targets: torch.Tensor, candidates: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """(T, C) cosines after projecting both sides orthogonal to the orthonormal columns of `basis` (d, k)."""
    def proj(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x - (x @ basis) @ basis.T, dim=-1)

    return proj(targets) @ proj(candidates).T


def _natural_reference(on_a: torch.Tensor, on_b: torch.Tensor, clusters: list[str]) -> dict[str, float]:
    """Medians over natural prompts (as targets) of the best retrieval within / outside their own cluster.

    `on_a`, `on_b`: (N, N) cosines of target i (shift on A) with candidate j's shift on A / on B."""
    same = torch.tensor([[a == b for b in clusters] for a in clusters])
    eye = torch.eye(len(clusters), dtype=torch.bool)
    idx = torch.arange(len(clusters))
    out: dict[str, float] = {}
    for label, allowed in (("other_cluster", ~same), ("same_cluster", same & ~eye)):
        rows = allowed.any(dim=1)
        best = on_a.masked_fill(~allowed, -2.0).argmax(dim=1)
        out[f"{label}_A_median"] = float(on_a[idx, best][rows].median())
        out[f"{label}_B_median"] = float(on_b[idx, best][rows].median())
    return out


def _evaluate(shifts: dict, basis: dict[str, torch.Tensor], natural_rows: list, targets: list[str],
              kind: list[str]) -> tuple[list[dict], dict]:
    """Per-target rows and the summary under one projection (`basis` per context set)."""
    nat, tgt = {k: v["natural"] for k, v in shifts.items()}, {k: v["targets"] for k, v in shifts.items()}
    natural = [r.prompt for r in natural_rows]
    on_a = _cos(tgt["A"], nat["A"], basis["A"])  # what retrieval sees and chooses by
    on_b = _cos(tgt["A"], nat["B"], basis["B"])  # the fixed target against held-out shifts
    own_b = _cos(tgt["A"], tgt["B"], basis["B"]).diagonal()
    among = _cos(tgt["A"], tgt["A"], basis["A"]).fill_diagonal_(-2.0)
    positive_idx = [i for i, k in enumerate(kind) if k == "positive"]
    rows = []
    for t, prompt in enumerate(targets):
        top = torch.topk(on_a[t], 3)
        j = int(top.indices[0])
        k_best = max(positive_idx, key=lambda i: float(among[t, i]))
        rows.append({
            "kind": kind[t], "prompt": prompt, "own_B": float(own_b[t]), "best_natural": natural[j],
            "best_natural_A": float(on_a[t, j]), "best_natural_B": float(on_b[t, j]),
            "top3_natural": [[natural[int(i)], float(v)] for v, i in zip(top.values, top.indices, strict=True)],
            "closest_positive": targets[k_best], "closest_positive_A": float(among[t, k_best]),
        })
    summary: dict[str, object] = {"natural_reference": _natural_reference(
        _cos(nat["A"], nat["A"], basis["A"]), _cos(nat["A"], nat["B"], basis["B"]), [r.cluster for r in natural_rows])}
    for group in ("positive", "benchmark"):
        mine = [r for r in rows if r["kind"] == group]
        summary[group] = {
            "n": len(mine), **{f"{key}_median": statistics.median(r[key] for r in mine)
                               for key in ("best_natural_A", "best_natural_B", "own_B")},
            "best_natural_A_max": max(r["best_natural_A"] for r in mine),
        }
    return rows, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--cache", default=None, help="file caching shifts by prompt text (created when missing)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "positive_themes.json"))
    args = ap.parse_args()

    lm = load_model()
    layout = chat_layout(lm.tokenizer)
    opt, held = split_contexts(load_corpus("contexts"), 16, seed=0)
    sets = {"A": opt[:8], "B": held[:8]}
    natural_rows = load_clustered("natural_prompts")
    natural = [r.prompt for r in natural_rows]
    positives = read_clustered_file(ROOT / "data" / "corpora" / "positive_prompts.tsv")
    bench = read_clustered_file(ROOT / "benchmarks" / "heldout_targets.tsv")
    targets = [r.prompt for r in positives] + [r.prompt for r in bench]
    kind = ["positive"] * len(positives) + ["benchmark"] * len(bench)
    cache_path = Path(args.cache) if args.cache else None
    cache = torch.load(cache_path) if cache_path and cache_path.is_file() else {}
    cache.setdefault(args.layer, {"A": {}, "B": {}, "g": {}})
    shifts, g = {}, cache[args.layer]["g"]
    for name, contexts in sets.items():
        if name not in g:
            g[name] = estimate_generic(lm, layout, args.layer, contexts)
        store = cache[args.layer][name]
        shifts[name] = {"natural": _shifts(lm, layout, args.layer, natural, contexts, store),
                        "targets": _shifts(lm, layout, args.layer, targets, contexts, store)}
        if cache_path:
            torch.save(cache, cache_path)

    projections = {  # name -> per set, orthonormal directions removed before every cosine
        "g": {k: (g[k] / g[k].norm()).unsqueeze(1) for k in sets},  # the tool's specific cosine
        "g+natural_mean": {k: torch.linalg.qr(torch.stack([g[k], shifts[k]["natural"].mean(0)]).T)[0] for k in sets},
    }
    results = {}
    for name, basis in projections.items():
        rows, summary = _evaluate(shifts, basis, natural_rows, targets, kind)
        results[name] = {"summary": summary, "rows": rows}
        print(f"\n== cosines with {name} projected out: best natural prompt on A (its cos on B; the target prompt's "
              "own cos on B)")
        for r in sorted(rows, key=lambda r: -r["best_natural_A"]):
            print(f"{r['kind'][:3]} {r['best_natural_A']:.3f} ({r['best_natural_B']:.3f}; own {r['own_B']:.3f})  "
                  f"{r['prompt']!r} <- {r['best_natural']!r}")
        print(json.dumps(summary, indent=1))
    write_json(args.out, {"layer": args.layer, "contexts": sets, "projections": results, "machine": machine()})



if __name__ == "__main__":
    main()
