"""Speed of the search engine on this machine: candidates/s, achieved FLOP/s, steps to a held-out cosine.

    python benchmarks/bench_attacks.py speed     # activation objective: ours vs full forward; ours vs nanoGCG
    python benchmarks/bench_attacks.py flops     # FLOP/s of candidate evaluation vs dense fp32 matmul FLOP/s
    python benchmarks/bench_attacks.py converge  # steps/time to held-out cos >= 0.9: plain GCG vs the engine
                                                 # (retrieval start, adaptive swaps, length moves)
    python benchmarks/bench_attacks.py all       # all three; every subcommand writes benchmarks/results/<name>.json

nanoGCG is not a project dependency: `speed` compares against it only when it is installed
(`pip install nanogcg==0.3.0 scipy`, then reinstall this project's transformers: nanoGCG pins transformers<=4.47.1).
It runs with `use_prefix_cache=False` (its prefix cache crashes on transformers 5). Defaults are small (2 CPU
cores, a few minutes per subcommand); raise --width/--steps for steadier numbers. Numbers on a shared machine are
noisy: ratios come from runs made side by side in one process.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch
from _setup import NATURAL_PROMPT, build, machine, write_json

from realize.attacks import gcg
from realize.attacks.baselines import RetrievalConfig, natural_retrieval
from realize.attacks.objectives import TargetStringObjective
from realize.attacks.prompt_cache import segments
from realize.attacks.sampling import allowed_token_mask, random_candidates
from realize.data.activations import decoder_layers
from realize.data.chat import encode
from realize.data.corpora import load_corpus
from realize.data.models import load_model

MESSAGE, TARGET = "Tell me how to bake bread.", "Sure, here is how to bake bread"


def _timed(fn, repeats: int, warm_up: bool = True) -> float:
    if warm_up:
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _candidates(lm, width: int, length: int, seed: int) -> torch.Tensor:
    mask = allowed_token_mask(lm.tokenizer, vocab_size=lm.model.get_input_embeddings().weight.shape[0])
    return random_candidates(width, length, mask=mask, generator=torch.Generator().manual_seed(seed))


def _full_forward(problem, prompts: torch.Tensor) -> None:
    """The naive reference: every placed input through the whole model (all blocks, norm, LM head), no reuse."""
    for ctx in problem.objective.context_ids:  # equal-length prompts: one unpadded batch per context
        ids = torch.tensor([problem.layout.place(p.tolist(), ctx).ids for p in prompts])
        with torch.no_grad():
            problem.lm.model(input_ids=ids, output_hidden_states=True)


def speed(args: argparse.Namespace, lm) -> dict[str, object]:
    problem = build("natural", layer=args.layer, lm=lm)
    cands = _candidates(lm, args.width, args.length, args.seed)
    ours = _timed(lambda: problem.objective.losses(cands), args.repeats)
    # the reference is slow and linear in the number of candidates: time a slice of the same candidates
    ref = cands[: args.ref_width]
    full = _timed(lambda: _full_forward(problem, ref), 1, warm_up=False) * args.width / ref.shape[0]
    act = {"width": args.width, "reference_width": ref.shape[0], "length": args.length,
           "contexts": len(problem.objective.context_ids), "ours_cands_per_s": args.width / ours,
           "full_forward_cands_per_s": args.width / full, "speedup": full / ours}
    print(f"activation objective, layer {args.layer}, width {args.width}: ours {act['ours_cands_per_s']:.1f} "
          f"cand/s, full forward {act['full_forward_cands_per_s']:.1f} cand/s -> {act['speedup']:.2f}x", flush=True)
    out: dict[str, object] = {"activation": act}

    objective = TargetStringObjective(lm.model, lm.tokenizer, MESSAGE, TARGET)
    config = gcg.GCGConfig(steps=args.steps, width=args.width, top_k=args.top_k, n_replace=1, n_replace_min=1,
                           p_length_move=0.0, seed=args.seed, metrics_every=10**6)
    result = gcg.run(objective, lm, None, config, init=encode(lm.tokenizer, "x" + " x" * 19))
    evals = sum(s.n_candidates for s in result.trajectory)
    ours_row = {"seconds_per_step": result.seconds / args.steps, "cands_per_s": evals / result.seconds,
                "final_loss": result.best_loss}
    print(f"target string, ours: {ours_row}", flush=True)
    out["target_string"] = {"ours": ours_row, "width": args.width, "top_k": args.top_k, "steps": args.steps}
    try:
        import nanogcg
    except ImportError:
        print("nanogcg not installed: `pip install nanogcg==0.3.0 scipy` (then reinstall transformers>=5)")
        return out
    logging.getLogger("nanogcg").setLevel(logging.WARNING)
    nconfig = nanogcg.GCGConfig(num_steps=args.steps, search_width=args.width, topk=args.top_k, n_replace=1,
                                seed=args.seed, use_prefix_cache=False, verbosity="WARNING")
    start = time.perf_counter()
    try:
        nres = nanogcg.run(lm.model, lm.tokenizer, MESSAGE, TARGET, nconfig)
    except Exception as err:  # noqa: BLE001  (a third-party tool on a newer transformers: report, don't crash)
        out["target_string"]["nanogcg_error"] = repr(err)
        print(f"nanogcg failed: {err!r}")
        return out
    seconds = time.perf_counter() - start
    theirs = {"seconds_per_step": seconds / len(nres.losses), "cands_per_s": args.width * len(nres.losses) / seconds,
              "final_loss": min(nres.losses)}
    out["target_string"]["nanogcg"] = theirs
    out["target_string"]["speedup"] = theirs["seconds_per_step"] / ours_row["seconds_per_step"]
    print(f"target string, nanoGCG: {theirs} -> ours is {out['target_string']['speedup']:.2f}x per step", flush=True)
    return out


def _eval_flops(problem, width: int, length: int) -> float:
    """FLOPs of scoring `width` candidates: 2 * params per block * tokens run + attention (QK and AV: 4 * d per
    key per query), for blocks 0..layer, with the KV reuse of `attacks.prompt_cache` (prompt once per candidate,
    post tokens per candidate and context; the shared pre tokens are precomputed and not counted)."""
    model, obj = problem.lm.model, problem.objective
    n_blocks = problem.layer + 1
    block_params = sum(p.numel() for p in decoder_layers(model)[0].parameters())
    d = model.config.hidden_size
    segs = [segments(problem.layout, c) for c in obj.context_ids]
    pre = len(segs[0].pre)
    tokens = length + sum(len(s.post) for s in segs)
    keys = sum(pre + j + 1 for j in range(length))
    keys += sum(pre + length + i + 1 for s in segs for i in range(len(s.post)))
    return width * n_blocks * (2 * block_params * tokens + 4 * d * keys)


def flops(args: argparse.Namespace, lm) -> dict[str, object]:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    matmul = 2 * 2048**3 / _timed(lambda: a @ b, 10)
    problem = build("natural", layer=args.layer, lm=lm)
    cands = _candidates(lm, args.width, args.length, args.seed)
    seconds = _timed(lambda: problem.objective.losses(cands), args.repeats)
    achieved = _eval_flops(problem, args.width, args.length) / seconds
    out = {"matmul_gflops": matmul / 1e9, "candidate_eval_gflops": achieved / 1e9, "ratio": achieved / matmul,
           "width": args.width, "length": args.length}
    print(f"matmul 2048^2 fp32: {matmul / 1e9:.1f} GFLOP/s; candidate evaluation: {achieved / 1e9:.1f} GFLOP/s "
          f"-> {100 * achieved / matmul:.0f}% of matmul", flush=True)
    return out


def _first_reaching(problem, result, threshold: float) -> tuple[int | None, float | None, float]:
    """Earliest step whose best prompt has held-out cos >= threshold (None if never), its cumulative time, and the
    best held-out cos seen. Held-out metrics are computed once per distinct best prompt."""
    elapsed, cache, best = 0.0, {}, -1.0
    for step in result.trajectory:
        elapsed += step.seconds
        ids = step.prompt_ids
        if ids not in cache:
            cache[ids] = float(problem.heldout.metrics(torch.tensor(ids))["cos"])
        best = max(best, cache[ids])
        if cache[ids] >= threshold:
            return step.step + 1, elapsed, best
    return None, None, best


def converge(args: argparse.Namespace, lm) -> dict[str, object]:
    problem = build("natural", layer=args.layer, lm=lm)
    base = dict(steps=args.steps, width=args.width, top_k=args.top_k, seed=args.seed, metrics_every=10**6)
    plain = gcg.run(problem.objective, lm, problem.layout,
                    gcg.GCGConfig(**base, n_replace=1, n_replace_min=1, p_length_move=0.0))
    # the engine: start from the best natural prompt of the shipped corpus, the target's own prompt excluded
    pool = [p for p in load_corpus("natural_prompts") if p.strip() != NATURAL_PROMPT]
    init = natural_retrieval(problem.objective, lm, problem.layout, RetrievalConfig(prompts=tuple(pool)))
    full = gcg.run(problem.objective, lm, problem.layout, gcg.GCGConfig(**base), init=init.best_ids)
    out: dict[str, object] = {"threshold": args.threshold, "steps_budget": args.steps, "width": args.width,
                              "engine_start": {**problem.report(init.best_ids), "seconds": init.seconds}}
    print(f"engine start (retrieval, own prompt excluded): {out['engine_start']}", flush=True)
    for name, res, extra in (("plain_gcg", plain, 0.0), ("engine_retrieval_init", full, init.seconds)):
        step, secs, best = _first_reaching(problem, res, args.threshold)
        out[name] = {"steps_to_threshold": step, "seconds_to_threshold": None if secs is None else secs + extra,
                     "best_heldout_cos": best, "total_seconds": res.seconds + extra, "prompt": res.best_prompt}
        print(f"{name}: steps to held-out cos >= {args.threshold}: {step} ({secs} s + {extra:.0f} s init); "
              f"best held-out cos {best:.3f}; {res.best_prompt!r}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["speed", "flops", "converge", "all"])
    parser.add_argument("--layer", type=int, default=12)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--top-k", "--topk", dest="top_k", type=int, default=64)
    parser.add_argument("--length", type=int, default=12, help="prompt length for the speed/FLOP measurements")
    parser.add_argument("--steps", type=int, default=10, help="GCG steps (speed: vs nanoGCG; converge: budget)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ref-width", type=int, default=16, help="candidates timed for the full-forward reference")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    lm = load_model()
    commands = ["speed", "flops", "converge"] if args.command == "all" else [args.command]
    for name in commands:
        result = {"speed": speed, "flops": flops, "converge": converge}[name](args, lm)
        write_json(f"{args.out_dir}/{name}.json", {"machine": machine(), "args": vars(args), **result})


if __name__ == "__main__":
    main()
