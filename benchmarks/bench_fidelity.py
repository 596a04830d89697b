"""Which fidelity measure separates an instruction's content from its form? Side by side, on the same shifts.

    python benchmarks/bench_fidelity.py --pairs benchmarks/sibling_pairs_heldout.tsv --layers 6 12 [--json OUT]

For each measure M(s, t) between a prompt's mean shift s and a target t:

- `specific`: cosine with the generic "a prompt is present" direction g removed from both (what the audit uses);
- `whitened`: the same after whitening by the covariance of natural prompts' shifts (W = (S + lam I)^(-1/2), lam =
  `--ridge` x mean eigenvalue): directions in which many instructions vary count less, rare ones more;
- `form-k`: the specific cosine with the top k principal directions of the natural shifts also projected out.

it reports, on held-out sibling pairs (same template, other content; targets measured on 8 contexts, prompts on 8
others, so no number is in-sample):

- content margin: M(s_A, T_A) - M(s_B, T_A), the true prompt against its same-form sibling on the true target
  (both orders averaged), and that margin over its spread across pairs;
- positives vs nulls: the best retrieval value (best of the 400 corpus prompts, chosen and scored under M on the
  optimization contexts' cached shifts: a search-free proxy) for held-out positives' shifts vs natural-subspace
  random directions at the same norms, as (mean positives - mean nulls) / pooled sd.

A measure is better for the content test when it widens the content margin without closing the positive/null gap.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import torch
from _setup import machine, write_json

from realize.attacks.objectives import estimate_generics
from realize.corpus_shifts import corpus_shifts_at, mean_shifts_at
from realize.data.chat import chat_layout
from realize.data.corpora import load_corpus
from realize.data.models import cache_root, load_model
from realize.data.shift import project_out
from realize.identity import model_digest
from realize.setting import ContextSplit
from realize.targets import natural_nulls

Measure = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (n, d) shifts, (d,) target -> (n,)


def read_pairs(path: Path) -> list[tuple[str, str, str]]:
    """(pair, first prompt, second prompt) from a TSV whose first column names the pair and whose last column is
    the prompt, two rows per pair ('#' comments and a header starting with 'pair' skipped)."""
    rows: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#") or line.startswith("pair\t"):
            continue
        fields = line.split("\t")
        rows.setdefault(fields[0], []).append(fields[-1])
    return [(pair, prompts[0], prompts[1]) for pair, prompts in rows.items() if len(prompts) == 2]


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b) / (a.norm(dim=-1) * b.norm()).clamp_min(1e-12)


def measures(natural: torch.Tensor, generic: torch.Tensor, ridge: float, ks: list[int]) -> dict[str, Measure]:
    """The measures, fitted on the natural prompts' shifts (n, d) with g removed first."""
    x = project_out(natural.double(), generic.double())
    centered = x - x.mean(0)
    cov = centered.T @ centered / (x.shape[0] - 1)
    values, vectors = torch.linalg.eigh(cov)
    lam = ridge * float(values.clamp_min(0).mean())
    whiten = vectors @ torch.diag((values.clamp_min(0) + lam).rsqrt()) @ vectors.T
    _, _, basis = torch.linalg.svd(centered, full_matrices=False)
    g = generic.double()

    def specific(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return _cos(project_out(s.double(), g), project_out(t.double(), g))

    def whitened(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return _cos(project_out(s.double(), g) @ whiten, project_out(t.double(), g) @ whiten)

    out: dict[str, Measure] = {"specific": specific, f"whitened (ridge {ridge:g})": whitened}
    for k in ks:
        top = basis[:k]

        def form(s: torch.Tensor, t: torch.Tensor, top: torch.Tensor = top) -> torch.Tensor:
            s2, t2 = project_out(s.double(), g), project_out(t.double(), g)
            return _cos(s2 - (s2 @ top.T) @ top, t2 - (t2 @ top.T) @ top)

        out[f"form-{k}"] = form
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 12])
    parser.add_argument("--ridge", type=float, default=0.1)
    parser.add_argument("--form-k", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--positives", type=int, default=24)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    lm = load_model()
    layout = chat_layout(lm.tokenizer, "prefix")
    split = ContextSplit.of(load_corpus("contexts"), 8, 8, 16, 0)
    target_contexts, prompt_contexts = split.optimization, split.selection  # targets on one set, prompts on another
    pairs = read_pairs(args.pairs)
    texts = [p for _, a, b in pairs for p in (a, b)]
    targets = mean_shifts_at(lm, layout, args.layers, texts, target_contexts)
    shifts = mean_shifts_at(lm, layout, args.layers, texts, prompt_contexts)
    corpora = corpus_shifts_at(lm, layout, args.layers, split.optimization, fingerprint=model_digest(lm),
                               cache_dir=cache_root() / "corpus_shifts")
    generics = estimate_generics(lm, layout, args.layers, prompt_contexts)
    report: dict[str, object] = {"machine": machine(), "pairs": [p for p, _, _ in pairs], "layers": {}}
    for layer in args.layers:
        corpus = corpora[layer]
        natural = corpus.shifts[corpus.select("natural_prompts")[0]]
        positive_rows = corpus.select("positive_prompts")[0][: args.positives]
        pos_targets = corpus.shifts[positive_rows]
        gen = torch.Generator().manual_seed(7)
        null_targets = torch.stack([natural_nulls(natural, 1, float(t.norm()), gen)[0] for t in pos_targets])
        rows = {}
        for name, m in measures(natural, generics[layer], args.ridge, args.form_k).items():
            margins, own = [], []
            for i in range(len(pairs)):
                a, b = 2 * i, 2 * i + 1
                for x, y in ((a, b), (b, a)):
                    own_value = float(m(shifts[layer][x : x + 1], targets[layer][x])[0])
                    sib_value = float(m(shifts[layer][y : y + 1], targets[layer][x])[0])
                    own.append(own_value)
                    margins.append(own_value - sib_value)
            best_pos = [float(m(natural, t).max()) for t in pos_targets]
            best_null = [float(m(natural, t).max()) for t in null_targets]
            mp, mn = sum(best_pos) / len(best_pos), sum(best_null) / len(best_null)
            sp = torch.tensor(best_pos).std().item()
            sn = torch.tensor(best_null).std().item()
            pooled = math.sqrt((sp**2 + sn**2) / 2)
            mean_margin = sum(margins) / len(margins)
            margin_sd = torch.tensor(margins).std().item()
            rows[name] = {"own": sum(own) / len(own), "content_margin": mean_margin, "margin_sd": margin_sd,
                          "margin_over_sd": mean_margin / margin_sd if margin_sd > 0 else math.inf,
                          "margins": margins, "positives_best": mp, "nulls_best": mn,
                          "positive_null_separation": (mp - mn) / pooled if pooled > 0 else math.inf}
            print(f"L{layer} {name:<20} own {rows[name]['own']:.2f}  content margin {mean_margin:+.3f} "
                  f"(sd {margin_sd:.3f}, {rows[name]['margin_over_sd']:.1f} sd)  positives {mp:.2f} nulls {mn:.2f} "
                  f"separation {rows[name]['positive_null_separation']:.1f} sd", flush=True)
        report["layers"][str(layer)] = rows  # type: ignore[index]
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
