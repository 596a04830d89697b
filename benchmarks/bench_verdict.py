"""Does the calibrated verdict get the cases right whose answer we know, on targets the corpora lack?

    python benchmarks/bench_verdict.py [--layer 7] [--budget quick] [--targets 4] [--out runs/bench-verdict]

Vectors (all at `--layer`, written to OUT/vectors/*.safetensors and audited with `realize audit`):
- `heldout.<cluster>`: the mean shift of a natural prompt from `benchmarks/heldout_targets.tsv` (themes and
  paraphrases absent from every shipped corpus and from the positive controls), measured on base contexts that the
  audit's three context sets never use. Expected: realizable.
- `heldout-x10.<cluster>`: the first of those times 10. Expected: not "realizable" (magnitude beyond natural).
- `random.natural` / `random.isotropic`: a random direction from the natural shift distribution / an isotropic
  one, at the first target's norm. Expected: not realizable.
- with `--distilled N`: `distilled.<cluster>`: a vector distilled from each of the first N held-out prompts (steering
  reproduces the prompted model's next-token distributions along its own text, on the same unused contexts), and
  `random-distilled.natural` at the first one's norm. Expected, behavior axis: realizable / not realizable.

Prints one line per vector (verdict, why, stability) and the controls; writes OUT/summary.json. The audit's own
outputs (report.html, results.parquet) are in OUT/audit.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _setup import machine, write_json

from realize.cli import main as realize_main
from realize.config import AuditConfig
from realize.identity import model_digest
from realize.corpus_shifts import corpus_shifts, corpus_shifts_at, mean_shifts, mean_shifts_at
from realize.data.chat import chat_layout
from realize.data.corpora import load_corpus, read_clustered_file
from realize.data.models import cache_root, load_model
from realize.data.results_dataset import read_rows
from realize.data.vectors import SteeringVector, save_control_vector_gguf, save_safetensors
from realize.distill import DistillConfig, train_distilled
from realize.setting import ContextSplit
from realize.targets import isotropic_nulls, natural_nulls

HERE = Path(__file__).resolve().parent


def unused_contexts(config: AuditConfig, n: int) -> list[str]:
    """Base contexts outside the audit's optimization, selection, test and magnitude sets."""
    contexts = load_corpus("contexts")
    split = ContextSplit.of(contexts, config.n_opt_contexts, config.n_selection, config.n_test, config.seed)
    used = {*split.optimization, *split.selection, *split.test, *split.magnitude}
    rest = [c for c in contexts if c not in used]
    if len(rest) < n:
        raise SystemExit(f"only {len(rest)} unused contexts for {n}")
    return rest[:n]


def build_vectors(layer: int, n_targets: int, config: AuditConfig, seed: int) -> list[SteeringVector]:
    lm = load_model()
    layout = chat_layout(lm.tokenizer, "prefix")
    targets = read_clustered_file(HERE / "heldout_targets.tsv")[:n_targets]
    contexts = unused_contexts(config, 8)
    shifts = mean_shifts(lm, layout, layer, [t.prompt for t in targets], contexts)
    split = ContextSplit.of(load_corpus("contexts"), config.n_opt_contexts, config.n_selection, config.n_test,
                            config.seed)  # the audit's own corpus-shift cache: computed here once, reused there
    corpus = corpus_shifts(lm, layout, layer, split.optimization, fingerprint=model_digest(lm),
                           cache_dir=cache_root() / "corpus_shifts")
    natural = corpus.shifts[corpus.select("natural_prompts")[0]]
    vectors = [SteeringVector(directions={layer: s}, scale=1.0, method="natural-prompt shift",
                              name=f"heldout.{t.cluster}", notes=t.prompt) for t, s in zip(targets, shifts, strict=True)]
    first = shifts[0]
    vectors.append(SteeringVector(directions={layer: first}, scale=10.0, method="natural-prompt shift x10",
                                  name=f"heldout-x10.{targets[0].cluster}", notes=targets[0].prompt))
    gen = torch.Generator().manual_seed(seed + 12345)
    norm = float(first.norm())
    vectors.append(SteeringVector(directions={layer: natural_nulls(natural, 1, norm, gen)[0]}, scale=1.0,
                                  method="random (natural subspace)", name="random.natural"))
    vectors.append(SteeringVector(directions={layer: isotropic_nulls(first.shape[0], 1, norm, gen)[0]}, scale=1.0,
                                  method="random (isotropic)", name="random.isotropic"))
    return vectors


def build_distilled(layer: int, n: int, config: AuditConfig, seed: int) -> list[SteeringVector]:
    """Vectors distilled from the first `n` held-out prompts on unused contexts, and one natural-distribution random
    direction at the first one's norm."""
    lm = load_model()
    layout = chat_layout(lm.tokenizer, "prefix")
    contexts = unused_contexts(config, 6)
    out = []
    for target in read_clustered_file(HERE / "heldout_targets.tsv")[:n]:
        result = train_distilled(lm, layout, target.prompt, layer, contexts, DistillConfig(steps=config.distill_steps, tokens=16))
        vector = result.vector
        print(f"distilled {target.cluster}: loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}, "
              f"norm {float(vector.directions[layer].norm()):.1f}", flush=True)
        out.append(SteeringVector(directions={layer: vector.directions[layer].float()}, scale=1.0,
                                  method="prompt-distilled vector", name=f"distilled.{target.cluster}",
                                  notes=target.prompt))
    split = ContextSplit.of(load_corpus("contexts"), config.n_opt_contexts, config.n_selection, config.n_test,
                            config.seed)
    corpus = corpus_shifts(lm, layout, layer, split.optimization, fingerprint=model_digest(lm),
                           cache_dir=cache_root() / "corpus_shifts")
    natural = corpus.shifts[corpus.select("natural_prompts")[0]]
    gen = torch.Generator().manual_seed(seed + 4242)
    norm = float(out[0].directions[layer].norm())
    out.append(SteeringVector(directions={layer: natural_nulls(natural, 1, norm, gen)[0]}, scale=1.0,
                              method="random (natural subspace)", name="random-distilled.natural"))
    return out


def build_multilayer(layers: list[int], config: AuditConfig, seed: int, folder: Path) -> list[str]:
    """Two repeng-style GGUF control vectors at `layers`: the per-layer mean shifts of the first held-out target
    (a natural steer at every layer at once), and random directions from each layer's natural shift distribution at
    the same per-layer norms."""
    lm = load_model()
    layout = chat_layout(lm.tokenizer, "prefix")
    target = read_clustered_file(HERE / "heldout_targets.tsv")[0]
    shifts = mean_shifts_at(lm, layout, layers, [target.prompt], unused_contexts(config, 8))
    split = ContextSplit.of(load_corpus("contexts"), config.n_opt_contexts, config.n_selection, config.n_test,
                            config.seed)
    corpora = corpus_shifts_at(lm, layout, layers, split.optimization, fingerprint=model_digest(lm),
                               cache_dir=cache_root() / "corpus_shifts")
    gen = torch.Generator().manual_seed(seed + 777)
    natural = {i: shifts[i][0] for i in layers}
    random = {i: natural_nulls(corpora[i].shifts[corpora[i].select("natural_prompts")[0]], 1,
                               float(natural[i].norm()), gen)[0] for i in layers}
    files = []
    for name, directions in (("multilayer-heldout", natural), ("multilayer-random", random)):
        path = folder / f"{name}.gguf"
        save_control_vector_gguf(SteeringVector(directions=directions, scale=1.0, name=name), path,
                                 model_hint=lm.name)
        files.append(str(path))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=7)
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench-verdict")
    parser.add_argument("--axes", choices=("both", "activation", "behavior"), default="both")
    parser.add_argument("--distilled", type=int, default=0, help="also audit vectors distilled from this many "
                        "held-out prompts (+ one random direction at their norm)")
    parser.add_argument("--no-shifts", action="store_true", help="skip the mean-shift vectors (heldout.*, x10, random)")
    parser.add_argument("--multilayer", default="", help="e.g. 6,7,8,9,10,11,12: also audit two 7-layer GGUF "
                        "control vectors (a held-out prompt's per-layer shifts; random per-layer directions)")
    args = parser.parse_args()
    out = Path(args.out)
    config = AuditConfig(budget=args.budget, seed=args.seed)
    folder = out / "vectors"
    files = sorted(str(p) for p in folder.glob("*.safetensors"))
    if not files:  # built once per OUT; delete OUT/vectors to rebuild
        folder.mkdir(parents=True, exist_ok=True)
        built = [] if args.no_shifts else build_vectors(args.layer, args.targets, config, args.seed)
        if args.distilled:
            built += build_distilled(args.layer, args.distilled, config, args.seed)
        for vector in built:
            files.append(str(folder / f"{vector.name}.safetensors"))  # one file each: a file has one scale/notes
            save_safetensors([vector], files[-1])
        if args.multilayer:
            files += build_multilayer([int(x) for x in args.multilayer.split(",")], config, args.seed, folder)
    files += sorted(str(p) for p in folder.glob("*.gguf") if str(p) not in files)
    start = time.perf_counter()
    code = realize_main(["audit", *files, "--budget", args.budget, "--axes", args.axes, "--seed",
                         str(args.seed), "--out", str(out / "audit"), "--quiet", "--overwrite"])
    seconds = time.perf_counter() - start
    rows = read_rows(out / "audit" / "results.parquet")
    best: dict[tuple[str, str], dict] = {}
    for r in rows:  # per item and axis: the best prompt's row, else any row (its verdict is the item's)
        key = (r["vector_name"], r["axis"])
        if r["is_best"] or key not in best:
            best[key] = r
    fields = ("kind", "verdict", "direction_verdict", "verdict_stability", "realizability_score", "specific_cos_test",
              "recovery_test", "content", "content_margin", "true_content_margin", "unrelated_value", "direction_cos",
              "effect_ratio", "effect_kl",
              "magnitude_factor", "realizable_scale",
              "prompt", "realism", "is_best")
    summary = {"machine": machine(), "args": vars(args), "exit_code": code, "seconds": seconds,
               "items": {f"{name} [{axis}]": {k: r[k] for k in fields} for (name, axis), r in sorted(best.items())}}
    write_json(out / "summary.json", summary)
    for name, r in summary["items"].items():
        value = r["specific_cos_test"] if "activation" in name else r["recovery_test"]
        value = float("nan") if value is None else value
        stability = float("nan") if r["verdict_stability"] is None else r["verdict_stability"]
        print(f"{name:60s} {r['verdict']:32s} value {value:6.3f} stability {stability:.2f} "
              f"{(r['prompt'] or '')[:70]!r}")


if __name__ == "__main__":
    main()
