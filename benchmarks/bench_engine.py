"""The audit's search engine on held-out targets (natural prompts the corpora lack), against plain GCG and
nanoGCG-style search; and what it costs next to the search the audit ran before.

    python benchmarks/bench_engine.py converge [--targets 6] [--steps 40] [--every 5]
        steps and time to test-context specific cos >= 0.8 with a prompt that passes the realism threshold:
        the engine (retrieval start + natural GCG), plain GCG ("x x x" start, 1 swap, fixed length) and
        nanoGCG-style GCG (nanoGCG 0.3.0's own candidate sampling and filter, its 20-token "x x ..." start, moving
        to each step's best candidate), same width, one process, one target after the other
    python benchmarks/bench_engine.py audit-time [--targets 3] [--budget default]
        per target, the audit's `search` today (retrieval + the fluent Pareto search, the budgets it shipped with)
        and now (retrieval + natural GCG), side by side: seconds and the picked prompt's test numbers
    python benchmarks/bench_engine.py speed [--steps 6]
        natural GCG with and without probe sampling (2 of 8 contexts first, the best half scored on all 8):
        candidates/s and loss after the same steps

Contexts: the default audit preset's three disjoint sets (8 optimization / 8 selection / 16 test, seed 0).
Every trajectory is checkpointed every `--every` steps; the checkpoint prompts are judged on selection and test
contexts (`realize.audit_search.judge`). At step s a method's answer is the checkpoint prompt up to s with the
highest *selection* specific cosine among those with realism >= the classifier's threshold; its *test* numbers
are reported (the contexts that chose it never report it). Writes benchmarks/results/engine_<command>.json.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Sequence

import torch
from _heldout import heldout_targets, setting_for
from _setup import machine, write_json

from realize.attacks import gcg
from realize.attacks.base import Step
from realize.attacks.beam import BeamConfig
from realize.attacks.fluent import FluentConfig
from realize.attacks.fluent import run as fluent_run
from realize.attacks.natural import NaturalConfig
from realize.attacks.natural import run as natural_run
from realize.attacks.objectives import ActivationObjectiveConfig, ActivationShiftObjective
from realize.axes.activation import retrieve, score, search
from realize.axes.common import naturalness, pick
from realize.config import AuditConfig
from realize.setting import AuditSetting
from realize.data.chat import encode
from realize.data.models import load_model

THRESHOLD = 0.8


def judge(setting: AuditSetting, target: torch.Tensor, candidates):  # noqa: ANN201
    """Every candidate's selection and test numbers (the audit's own scoring, `realize.axes.activation.score`)."""
    goal = {setting.layer: target}
    return [m.score for m in score(setting, goal, candidates, naturalness(setting, candidates))], None


def objective_for(setting: AuditSetting, target: torch.Tensor) -> ActivationShiftObjective:
    lm = setting.lm
    return ActivationShiftObjective(lm.model, lm.tokenizer, setting.layout, target, setting.layer,
                                    [encode(lm.tokenizer, c) for c in setting.contexts.optimization],
                                    generic=setting.generic_opt, config=ActivationObjectiveConfig())


# ---- the search the audit ran before this engine (copied from realize/audit_search.py at 4f72171) ------------
LEGACY = {"quick": dict(fluent_steps=6, fluent_width=12, lambdas=(0.0, 0.1), beam_width=4, beam_samples=8,
                        beam_length=8, keep_retrieval=4, max_frontier=8),
          "default": dict(fluent_steps=10, fluent_width=16, lambdas=(0.0, 0.1), beam_width=5, beam_samples=8,
                          beam_length=10, keep_retrieval=6, max_frontier=10)}


def legacy_search(setting: AuditSetting, target: torch.Tensor, budget: str, *, seed: int,
                  exclude_clusters: Sequence[str]) -> list[tuple[tuple[int, ...], str]]:
    b = LEGACY[budget]
    candidates = retrieve(setting, {setting.layer: target}, b["keep_retrieval"], exclude_clusters)
    config = FluentConfig(lambdas=b["lambdas"], steps=b["fluent_steps"], width=b["fluent_width"],
                          max_frontier=b["max_frontier"], seed=seed, restart_every=max(b["fluent_steps"] // 3, 1),
                          init_beam=BeamConfig(beam_width=b["beam_width"], samples_per_beam=b["beam_samples"],
                                               length=b["beam_length"], seed=seed))
    fluent = fluent_run(objective_for(setting, target), setting.lm, setting.layout, config,
                        init=candidates[0][0] if candidates else None)
    candidates += [(p.ids, "fluent") for p in fluent.frontier]
    return list({ids: (ids, name) for ids, name in reversed(candidates)}.values())[::-1]


def _picked(setting: AuditSetting, target: torch.Tensor, candidates) -> dict[str, object]:
    scores, _ = judge(setting, target, candidates)
    i = pick(scores, setting.min_realism)
    if i is None:
        return {"prompt": None, "test_specific_cos": None}
    s = scores[i]
    return {"prompt": s.prompt, "attack": s.attack, "test_specific_cos": s.value, "test_cos": s.cos,
            "selection_specific_cos": s.selection, "realism": s.realism, "perplexity": s.perplexity}


def audit_time(args: argparse.Namespace, setting: AuditSetting) -> dict[str, object]:
    rows = []
    for ht in heldout_targets(setting, args.targets):
        row: dict[str, object] = {"cluster": ht.cluster}
        for name, fn in (("before", lambda: legacy_search(setting, ht.target, args.budget, seed=0,
                                                          exclude_clusters=(ht.cluster,))),
                         ("now", lambda: search(setting, {setting.layer: ht.target},
                                                AuditConfig(budget=args.budget), exclude_clusters=(ht.cluster,)))):
            start = time.perf_counter()
            candidates = fn()
            seconds = time.perf_counter() - start
            row[name] = {"search_seconds": seconds, "n_candidates": len(candidates),
                         **_picked(setting, ht.target, candidates)}
            print(ht.cluster, name, row[name], flush=True)
        rows.append(row)
    total = {k: sum(r[k]["search_seconds"] for r in rows) for k in ("before", "now")}
    print(f"search seconds per target: before {total['before'] / len(rows):.1f}, now {total['now'] / len(rows):.1f}")
    return {"budget": args.budget, "rows": rows, "mean_seconds": {k: v / len(rows) for k, v in total.items()}}


# ---- converge: engine vs plain GCG vs nanoGCG-style -------------------------------------------------------------
def nanogcg_style(objective, lm, *, steps: int, width: int, top_k: int, seed: int) -> list[Step]:
    """nanoGCG 0.3.0's loop on our objective: its `sample_ids_from_grad` (n_replace 1, non-ASCII tokens barred)
    and `filter_ids` (the string alone round-trips), its default 20-token start, buffer_size 0 (the next prompt is
    each step's best candidate)."""
    from nanogcg.gcg import filter_ids, sample_ids_from_grad
    from nanogcg.utils import get_nonascii_toks

    torch.manual_seed(seed)
    tok = lm.tokenizer
    not_allowed = get_nonascii_toks(tok)
    ids = torch.tensor(encode(tok, "x x x x x x x x x x x x x x x x x x x x"))
    out = []
    for step in range(steps):
        t0 = time.perf_counter()
        _, grad = objective.loss_and_grad(ids)
        cands = filter_ids(sample_ids_from_grad(ids, grad.clone(), width, top_k, 1, not_allowed_ids=not_allowed), tok)
        losses = objective.losses(cands)
        j = int(losses.argmin())
        ids = cands[j]
        out.append(Step(step=step, loss=float(losses[j]), best_loss=float(losses[j]), prompt_ids=tuple(ids.tolist()),
                        prompt=tok.decode(ids.tolist()), seconds=time.perf_counter() - t0,
                        n_candidates=int(cands.shape[0])))
    return out


def _checkpoints(trajectory: Sequence[Step], every: int, start: tuple[int, ...] | None) -> list[tuple[int, float, tuple]]:
    """(step, cumulative seconds, prompt ids) every `every` steps and at the end; step 0 = the start prompt."""
    out = [] if start is None else [(0, 0.0, start)]
    elapsed = 0.0
    for i, s in enumerate(trajectory, start=1):
        elapsed += s.seconds
        if i % every == 0 or i == len(trajectory):
            out.append((i, elapsed, s.prompt_ids))
    return out


def _curve(setting: AuditSetting, target, checkpoints, extra_seconds: float) -> dict[str, object]:
    unique = list(dict.fromkeys(ids for _, _, ids in checkpoints))
    scores, _ = judge(setting, target, [(ids, "x") for ids in unique])
    by_ids = dict(zip(unique, scores, strict=True))
    points, chosen, chosen_any = [], None, None
    reached = reached_any = None
    for step, seconds, ids in checkpoints:
        s = by_ids[ids]
        if s.realism >= setting.min_realism and (chosen is None or s.selection > chosen.selection):
            chosen = s
        if chosen_any is None or s.selection > chosen_any.selection:
            chosen_any = s
        if reached is None and chosen is not None and chosen.value >= THRESHOLD:
            reached = (step, seconds + extra_seconds)
        if reached_any is None and chosen_any.value >= THRESHOLD:
            reached_any = (step, seconds + extra_seconds)
        points.append({"step": step, "seconds": seconds + extra_seconds, "prompt": s.prompt,
                       "selection_specific_cos": s.selection, "test_specific_cos": s.value,
                       "realism": s.realism})
    final = None if chosen is None else {"prompt": chosen.prompt, "test_specific_cos": chosen.value,
                                         "test_cos": chosen.cos, "realism": chosen.realism,
                                         "perplexity": chosen.perplexity}
    final_any = {"prompt": chosen_any.prompt, "test_specific_cos": chosen_any.value,
                 "realism": chosen_any.realism}
    return {"steps_to_threshold": None if reached is None else reached[0],
            "seconds_to_threshold": None if reached is None else reached[1],
            "steps_to_threshold_ignoring_realism": None if reached_any is None else reached_any[0],
            "final_natural": final, "final_any": final_any, "checkpoints": points}


def _budget(args: argparse.Namespace) -> dict[str, float]:
    """Fluency-budget overrides from the command line (NaturalConfig's defaults otherwise)."""
    return {k: getattr(args, k) for k in ("max_ce", "max_surprisal", "fluency_weight") if getattr(args, k) is not None}


def converge(args: argparse.Namespace, setting: AuditSetting) -> dict[str, object]:
    lm = setting.lm
    rows: list[dict[str, object]] = []
    partial = f"{args.out_dir}/engine_converge{args.tag}.partial.json"
    for ht in heldout_targets(setting, args.first_target + args.targets)[args.first_target :]:
        objective = objective_for(setting, ht.target)
        row: dict[str, object] = {"cluster": ht.cluster, "true_prompt": ht.prompt}
        if "engine" in args.methods:
            t0 = time.perf_counter()
            start = retrieve(setting, {setting.layer: ht.target}, 1, (ht.cluster,))[0][0]
            t_retrieval = time.perf_counter() - t0
            engine = natural_run(objective, lm, setting.layout,
                                 NaturalConfig(steps=args.steps, width=args.width, seed=0, **_budget(args)),
                                 init=start)
            row["engine"] = _curve(setting, ht.target, _checkpoints(engine.trajectory, args.every, start),
                                   t_retrieval)
            row["engine"]["n_candidates"] = engine.n_evaluations
            # what the audit carries to judging: the run's frontier (picked like the audit's `pick`)
            row["engine"]["frontier_pick"] = _picked(setting, ht.target, [(p.ids, "natural") for p in engine.frontier])
            print(ht.cluster, "engine", {k: v for k, v in row["engine"].items() if k != "checkpoints"}, flush=True)
        if "plain_gcg" in args.methods:
            plain = gcg.run(objective, lm, setting.layout, gcg.GCGConfig(
                steps=args.steps, width=args.gcg_width, top_k=args.top_k, n_replace=1, n_replace_min=1,
                p_length_move=0.0, seed=0, metrics_every=10**6))
            row["plain_gcg"] = _curve(setting, ht.target, _checkpoints(plain.trajectory, args.every, None), 0.0)
            print(ht.cluster, "plain_gcg", {k: v for k, v in row["plain_gcg"].items() if k != "checkpoints"},
                  flush=True)
        if "nanogcg_style" in args.methods:
            nano = nanogcg_style(objective, lm, steps=args.steps, width=args.gcg_width, top_k=args.top_k, seed=0)
            row["nanogcg_style"] = _curve(setting, ht.target, _checkpoints(nano, args.every, None), 0.0)
            print(ht.cluster, "nanogcg_style",
                  {k: v for k, v in row["nanogcg_style"].items() if k != "checkpoints"}, flush=True)
        rows.append(row)
        write_json(partial, {"machine": machine(), "args": vars(args), "rows": rows})  # survives an interruption
    return {"threshold": THRESHOLD, "min_realism": setting.min_realism, "steps": args.steps, "rows": rows}


def speed(args: argparse.Namespace, setting: AuditSetting) -> dict[str, object]:
    ht = heldout_targets(setting, 1)[0]
    objective = objective_for(setting, ht.target)
    start = retrieve(setting, {setting.layer: ht.target}, 1, (ht.cluster,))[0][0]
    out: dict[str, object] = {"cluster": ht.cluster, "steps": args.steps, "width": args.width}
    # what the fluency budget costs next to the objective, per candidate (the check runs first)
    from realize.attacks.fluency import encode_head, lm_head_ids, prompt_surprisal
    from realize.attacks.sampling import allowed_token_mask, random_candidates

    lm = setting.lm
    head = encode_head(lm.model, lm_head_ids(setting.layout))
    mask = allowed_token_mask(lm.tokenizer, vocab_size=lm.model.get_input_embeddings().weight.shape[0])
    cands = random_candidates(32, 12, mask=mask, generator=torch.Generator().manual_seed(0))
    objective.losses(cands[:4])
    prompt_surprisal(lm.model, head, cands[:4])
    t0 = time.perf_counter()
    objective.losses(cands)
    t_obj = time.perf_counter() - t0
    t0 = time.perf_counter()
    prompt_surprisal(lm.model, head, cands)
    t_flu = time.perf_counter() - t0
    out["per_candidate_seconds"] = {"objective_8_contexts": t_obj / 32, "fluency_check": t_flu / 32,
                                    "ratio": t_obj / t_flu}
    print(out["per_candidate_seconds"], flush=True)
    for name, extra in (("full", {}), ("probe", {"probe_contexts": 2, "probe_keep": 0.5})):
        r = natural_run(objective, setting.lm, setting.layout,
                        NaturalConfig(steps=args.steps, width=args.width, seed=0, **extra), init=start)
        scored = sum(s.n_candidates for s in r.trajectory)
        secs = sum(s.seconds for s in r.trajectory)
        new = sum(int(s.metrics.get("n_new", 0)) for s in r.trajectory)
        out[name] = {"seconds_per_step": secs / args.steps, "new_candidates": new, "scored": scored,
                     "screened_on_probe": r.config.get("n_screened", 0), "new_per_s": new / secs,
                     "scored_per_s": scored / secs, "best_loss": r.best_loss, "prompt": r.best_prompt}
        print(name, out[name], flush=True)
    # plain GCG and nanoGCG-style on the same objective: seconds per step (the converge runs' step counts x this)
    plain = gcg.run(objective, lm, setting.layout, gcg.GCGConfig(
        steps=args.steps, width=args.gcg_width, top_k=args.top_k, n_replace=1, n_replace_min=1, p_length_move=0.0,
        seed=0, metrics_every=10**6))
    nano = nanogcg_style(objective, lm, steps=args.steps, width=args.gcg_width, top_k=args.top_k, seed=0)
    for name, traj in (("plain_gcg", plain.trajectory), ("nanogcg_style", nano)):
        secs = sum(s.seconds for s in traj)
        scored = sum(s.n_candidates for s in traj)
        out[name] = {"seconds_per_step": secs / len(traj), "scored_per_s": scored / secs}
        print(name, out[name], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["converge", "audit-time", "speed"])
    parser.add_argument("--layer", type=int, default=12)
    parser.add_argument("--targets", type=int, default=6)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--width", type=int, default=48, help="natural GCG candidates proposed per step")
    parser.add_argument("--gcg-width", type=int, default=64, help="plain / nanoGCG-style candidates per step")
    parser.add_argument("--top-k", dest="top_k", type=int, default=64)
    parser.add_argument("--budget", default="default", choices=("quick", "default"))
    parser.add_argument("--methods", default="engine,plain_gcg,nanogcg_style", help="converge: comma-separated")
    parser.add_argument("--max-ce", dest="max_ce", type=float, default=None)
    parser.add_argument("--max-surprisal", dest="max_surprisal", type=float, default=None)
    parser.add_argument("--fluency-weight", dest="fluency_weight", type=float, default=None)
    parser.add_argument("--first-target", type=int, default=0, help="skip this many benchmark targets")
    parser.add_argument("--tag", default="", help="suffix of the output file name")
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args()
    args.methods = tuple(args.methods.split(","))
    logging.basicConfig(level=logging.WARNING)
    lm = load_model()
    setting = setting_for(lm, args.layer, "default")
    result = {"converge": converge, "audit-time": audit_time, "speed": speed}[args.command](args, setting)
    write_json(f"{args.out_dir}/engine_{args.command.replace('-', '_')}{args.tag}.json",
               {"machine": machine(), "args": vars(args), **result})


if __name__ == "__main__":
    main()
