"""Fluent Pareto search (EPO-style, Thompson et al. 2024 "Fluent dreaming"): trade the objective against prompt
perplexity and return the whole frontier, not one point.

A population of members, one per fluency weight lambda (log-spaced; 0 = unconstrained), each minimizes

    objective(p) + lambda * CE(p)          CE = mean negative log-prob of p's tokens under the LM (attacks.fluency)

by single-token swaps, starting from the LM-guided beam search's prompt (fluent by construction). Each step:

1. per member: gradient of the objective and of the CE w.r.t. the one-hot prompt; the CE pass also gives the LM's
   next-token distribution at every prompt position;
2. candidates: half GCG-style from the top-k of -(grad_obj + lambda * grad_CE), half from the *intersection* of
   the LM's top-k next tokens at that position with the objective's gradient (the LM proposes, the gradient ranks)
   -- swaps that keep the prompt readable yet move the objective;
3. the candidates of all members are pooled, filtered (in-context retokenization), scored once (objective + CE),
   and every member moves to the pool's argmin of its own weighted loss (cross-pollination for free);
4. every `restart_every` steps a member restarts from the best point for its lambda in the whole archive.

Every evaluated point is archived; the result's `frontier` is the Pareto set over (objective loss, CE), re-checked
on (cos, perplexity) from `objective.metrics`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial

import torch
from tqdm.auto import tqdm

from realize.attacks.beam import BeamConfig, start_or_beam
from realize.attacks.base import AttackResult, FrontierPoint, Objective, Step, filter_context
from realize.attacks.fluency import encode_head, lm_head_ids, prompt_ce, prompt_ce_and_grad
from realize.attacks.sampling import allowed_token_mask, dedupe, retokenization_filter, sample_candidates
from realize.data.chat import ChatLayout
from realize.data.models import LoadedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class FluentConfig:
    """Settings of the fluent Pareto search."""

    lambdas: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3)  # fluency weights, one member each (>= 0)
    steps: int = 30  # swap steps
    width: int = 24  # candidates per member per step
    top_k: int = 32  # gradient top-k tokens per position
    lm_top_k: int = 64  # LM next-token top-k per position, re-ranked by the objective gradient
    lm_share: float = 0.5  # fraction of each member's candidates drawn from the LM-guided set
    restart_every: int = 10  # restart members from the archive's best for their lambda (0 = never)
    readable_perplexity: float = 300.0  # `best_*` = lowest-loss frontier point at or under this perplexity
    max_frontier: int = 24  # frontier points whose metrics are computed (evenly spread over perplexity)
    ascii_only: bool = True  # allowed tokens: printable ASCII only, no special tokens
    seed: int = 0  # seed of candidate sampling (and of the beam initializer)
    init_beam: BeamConfig = field(default_factory=BeamConfig)  # initializer when no init prompt is given
    show_progress: bool = False  # tqdm bar over steps

    def __post_init__(self) -> None:
        if not self.lambdas or any(lam < 0 or not math.isfinite(lam) for lam in self.lambdas):
            raise ValueError(f"lambdas: expected a non-empty tuple of finite values >= 0, got {self.lambdas}")
        for name in ("steps", "width", "top_k", "lm_top_k", "max_frontier"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.lm_top_k < self.top_k:
            raise ValueError(f"lm_top_k: expected >= top_k ({self.top_k}), got {self.lm_top_k}")
        if not 0.0 <= self.lm_share <= 1.0:
            raise ValueError(f"lm_share: expected in [0, 1], got {self.lm_share}")
        if self.restart_every < 0:
            raise ValueError(f"restart_every: expected >= 0, got {self.restart_every}")
        if self.readable_perplexity <= 1.0:
            raise ValueError(f"readable_perplexity: expected > 1, got {self.readable_perplexity}")


def pareto_front(costs: torch.Tensor) -> torch.Tensor:
    """costs (N, 2) float, both minimized -> indices of the non-dominated rows, sorted by the first cost.

    A row is dominated when another row is <= in both costs and < in at least one. Exact duplicates keep one."""
    order = torch.argsort(costs[:, 1], stable=True)
    order = order[torch.argsort(costs[order, 0], stable=True)]  # by cost 0, ties by cost 1
    keep: list[int] = []
    best_second = math.inf
    for i in order.tolist():
        if costs[i, 1].item() < best_second:
            keep.append(i)
            best_second = costs[i, 1].item()
    return torch.tensor(keep, dtype=torch.long)


def lm_restricted(grad_obj: torch.Tensor, next_logprobs: torch.Tensor, allowed: torch.Tensor, lm_k: int) -> torch.Tensor:
    """The objective's gradient where the LM would plausibly write the token, +inf elsewhere.

    grad_obj (L, V), next_logprobs (L, V) = log P(. | head, p_<j), allowed (V,) bool -> (L, V): at position j only
    the LM's `lm_k` most likely allowed tokens keep their gradient, so a top-k of -grad over the result picks, of
    the tokens the LM proposes, those the objective wants (the intersection of LM and gradient top-k)."""
    lm_top = next_logprobs.masked_fill(~allowed, float("-inf")).topk(min(lm_k, int(allowed.sum())), dim=-1).indices
    out = torch.full_like(grad_obj, float("inf"))
    return out.scatter_(1, lm_top, grad_obj.gather(1, lm_top))


def _archive_points(
    objective: Objective, lm: LoadedModel, ids: torch.Tensor, loss: torch.Tensor, ce: torch.Tensor,
    proposer: torch.Tensor, lambdas: Sequence[float], max_points: int,
) -> list[FrontierPoint]:
    """The Pareto frontier of the archive over (loss, CE), then over (-cos, perplexity) with the objective's
    metrics (cos = -loss when the objective reports none)."""
    front = pareto_front(torch.stack([loss, ce], dim=1))
    if front.numel() > max_points:  # spread evenly over the CE range
        front = front[torch.linspace(0, front.numel() - 1, max_points).round().long().unique()]
    points: list[FrontierPoint] = []
    for i in front.tolist():
        metrics = dict(objective.metrics(ids[i]))
        specific = metrics.get("specific_cos")
        points.append(FrontierPoint(
            prompt=lm.tokenizer.decode(ids[i].tolist()),
            ids=tuple(int(t) for t in ids[i].tolist()),
            loss=float(loss[i]),
            cos=float(metrics.get("cos", -loss[i])),
            specific_cos=None if specific is None else float(specific),
            ce=float(ce[i]),
            perplexity=float(math.exp(ce[i])),
            fluency_weight=float(lambdas[int(proposer[i])]),
        ))
    costs = torch.tensor([[-float(p.cos), float(p.ce)] for p in points])  # type: ignore[arg-type]
    return [points[i] for i in pareto_front(costs).tolist()]


def run(
    objective: Objective,
    lm: LoadedModel,
    layout: ChatLayout,
    config: FluentConfig,
    *,
    init: Sequence[int] | None = None,
) -> AttackResult:
    """Population search over fluency weights; `init` (prompt ids) skips the beam-search initializer."""
    started = time.perf_counter()
    model, tokenizer = lm.model, lm.tokenizer
    context = filter_context(objective)
    generator = torch.Generator().manual_seed(config.seed)
    start_prompt, n_evaluations = start_or_beam(objective, lm, layout, config.init_beam, init)
    head = encode_head(model, lm_head_ids(layout))
    vocab = int(model.get_input_embeddings().weight.shape[0])
    allowed = allowed_token_mask(tokenizer, ascii_only=config.ascii_only, vocab_size=vocab)
    lambdas = torch.tensor(config.lambdas, dtype=torch.float32)
    n_members = len(config.lambdas)

    start = torch.tensor(list(start_prompt), dtype=torch.long).unsqueeze(0)
    arch_ids, arch_loss, arch_ce = start, objective.losses(start), prompt_ce(model, head, start)
    arch_from = torch.zeros(1, dtype=torch.long)
    seen = {tuple(start[0].tolist())}
    members = start.expand(n_members, -1).clone()  # (M, L)
    n_lm = round(config.width * config.lm_share)
    sample = partial(sample_candidates, top_k=config.top_k, n_replace=1, mask=allowed, generator=generator)
    trajectory: list[Step] = []
    for step in tqdm(range(config.steps), disable=not config.show_progress, desc="fluent"):
        step_start = time.perf_counter()
        pools, owners = [], []
        for m, (lam, prompt) in enumerate(zip(config.lambdas, members, strict=True)):
            grad_obj = objective.loss_and_grad(prompt)[1].cpu()
            _, grad_ce, next_lp = prompt_ce_and_grad(model, head, prompt)
            parts = [
                sample(prompt, grad_obj + lam * grad_ce, width=config.width - n_lm),
                sample(prompt, lm_restricted(grad_obj, next_lp, allowed, config.lm_top_k), width=n_lm),
            ]
            fresh = dedupe(torch.cat(parts), seen)
            fresh = fresh[retokenization_filter(tokenizer, layout, fresh, context=context)]
            seen.update(tuple(row) for row in fresh.tolist())
            pools.append(fresh)
            owners.append(torch.full((fresh.shape[0],), m, dtype=torch.long))
        pool, owner = torch.cat(pools), torch.cat(owners)
        if pool.shape[0] == 0:
            logger.info("fluent step %d: no new candidate survived the filters", step)
            continue
        loss, ce = objective.losses(pool), prompt_ce(model, head, pool)
        n_evaluations += pool.shape[0]
        arch_ids, arch_loss = torch.cat([arch_ids, pool]), torch.cat([arch_loss, loss])
        arch_ce, arch_from = torch.cat([arch_ce, ce]), torch.cat([arch_from, owner])
        # every member moves to the best of its own weighted loss: this step's pool or its current prompt
        restart = config.restart_every > 0 and (step + 1) % config.restart_every == 0
        for m in range(n_members):
            if restart:
                members[m] = arch_ids[(arch_loss + lambdas[m] * arch_ce).argmin()]
                continue
            current = int((arch_ids == members[m]).all(dim=1).nonzero()[0, 0])
            scores = loss + lambdas[m] * ce
            j = int(scores.argmin())
            if scores[j] < arch_loss[current] + lambdas[m] * arch_ce[current]:
                members[m] = pool[j]
        j = int(loss.argmin())
        at = [int((arch_ids == member).all(dim=1).nonzero()[0, 0]) for member in members]
        trajectory.append(
            Step(
                step=step,
                loss=float(loss[j]),
                best_loss=float(arch_loss.min()),
                prompt_ids=tuple(int(t) for t in members[-1].tolist()),  # the most fluency-weighted member
                prompt=tokenizer.decode(members[-1].tolist()),
                seconds=time.perf_counter() - step_start,
                n_candidates=int(pool.shape[0]),
                metrics={**{f"loss@{lam:g}": float(arch_loss[i]) for lam, i in zip(config.lambdas, at, strict=True)},
                         **{f"ce@{lam:g}": float(arch_ce[i]) for lam, i in zip(config.lambdas, at, strict=True)}},
            )
        )
    frontier = _archive_points(objective, lm, arch_ids, arch_loss, arch_ce, arch_from, config.lambdas,
                               config.max_frontier)
    readable = [p for p in frontier if p.perplexity is not None and p.perplexity <= config.readable_perplexity]
    best = min(readable, key=lambda p: p.loss) if readable else min(frontier, key=lambda p: math.inf if p.ce is None else p.ce)
    return AttackResult(
        attack="fluent",
        best_ids=best.ids,
        best_prompt=best.prompt,
        best_loss=best.loss,
        trajectory=tuple(trajectory),
        seconds=time.perf_counter() - started,
        n_evaluations=n_evaluations,
        config=asdict(config),
        frontier=tuple(frontier),
    )
