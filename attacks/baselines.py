"""Gradient-free baselines: random search over allowed tokens and natural-prompt retrieval.

Public API (stable):

    RandomSearchConfig(*, steps=50, width=64|512, length=12, n_replace=2, seed=0, ascii_only=True, batch_size=0,
                       show_progress=False)
    random_search(objective, lm, layout, config, *, init=None) -> AttackResult  (attack "random")
    RetrievalConfig(*, prompts=None, keep=20, batch_size=64, show_progress=False)
    natural_retrieval(objective, lm, layout, config, *, init=None) -> AttackResult  (attack "retrieval";
        `frontier` = the `keep` best prompts, ranked, with their losses; `layout` is unused, `init` refused)

Random search is hill climbing without gradients (Andriushchenko-style): start from `init` or random allowed
tokens; each step mutates `n_replace` random positions of the current best to random allowed tokens in `width`
candidates, keeps those that survive the in-context retokenization filter, and moves to the best if it improves.
Same budget knobs as GCG.

Natural retrieval scores every prompt of a corpus (`RetrievalConfig.prompts`; None = the shipped
`natural_prompts` corpus): the objective takes equal-length batches, so prompts are grouped by token length and
scored `batch_size` at a time (halved on out-of-memory).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from realize.attacks.base import (
    AttackResult, FrontierPoint, Objective, Step, evaluate_in_batches, filter_context, start_ids,
)
from realize.attacks.sampling import allowed_token_mask, dedupe, random_candidates, retokenization_filter
from realize.data.chat import ChatLayout, encode
from realize.data.corpora import load_corpus
from realize.data.errors import UserInputError
from realize.data.models import LoadedModel

__all__ = ["RandomSearchConfig", "RetrievalConfig", "natural_retrieval", "random_search"]


@dataclass(frozen=True, kw_only=True)
class RandomSearchConfig:
    steps: int = 50  # search steps
    width: int = field(default_factory=lambda: 512 if torch.cuda.is_available() else 64)  # candidates per step
    length: int = 12  # prompt length in tokens
    n_replace: int = 2  # positions mutated per candidate
    seed: int = 0  # seeds every random draw
    ascii_only: bool = True  # allowed tokens: printable ASCII only, no special tokens
    batch_size: int = 0  # candidates per objective call (0 = all); halved on out-of-memory
    show_progress: bool = False  # tqdm bar

    def __post_init__(self) -> None:
        for name in ("steps", "width", "length", "n_replace"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        for name in ("seed", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class RetrievalConfig:
    prompts: tuple[str, ...] | None = None  # the corpus to score; None = the shipped `natural_prompts` corpus
    keep: int = 20  # best prompts returned as the ranked frontier
    batch_size: int = 64  # prompts per objective call; halved on out-of-memory
    show_progress: bool = False  # tqdm bar

    def __post_init__(self) -> None:
        for name in ("keep", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if self.prompts is not None and (isinstance(self.prompts, str) or not isinstance(self.prompts, tuple)):
            raise ValueError("prompts: expected a tuple of prompt texts or None")


def random_search(
    objective: Objective,
    lm: LoadedModel,
    layout: ChatLayout | None,
    config: RandomSearchConfig,
    *,
    init: Sequence[int] | None = None,
) -> AttackResult:
    """Gradient-free hill climbing over allowed tokens (see module docstring); `init` (token ids) replaces the
    random start, and its length the configured one."""
    t_start = time.perf_counter()
    tokenizer, context = lm.tokenizer, filter_context(objective)
    gen = torch.Generator().manual_seed(config.seed)
    mask = allowed_token_mask(tokenizer, ascii_only=config.ascii_only)
    given = start_ids(init)
    start = random_candidates(1, config.length, mask=mask, generator=gen) if given is None else torch.tensor([given])
    length = start.shape[1]
    best_loss = float(objective.losses(start)[0])
    best = start[0]
    seen = {tuple(best.tolist())}
    n_evals, batch = 1, config.batch_size
    trajectory: list[Step] = []
    bar = tqdm(range(config.steps), disable=not config.show_progress, desc="random", dynamic_ncols=True)
    for step in bar:
        t0 = time.perf_counter()
        n = min(config.n_replace, length)
        positions = torch.rand((config.width, length), generator=gen).argsort(dim=1)[:, :n]
        values = random_candidates(config.width, n, mask=mask, generator=gen)
        cands = best.unsqueeze(0).repeat(config.width, 1).scatter_(1, positions, values)
        cands = dedupe(cands[retokenization_filter(tokenizer, layout, cands, context=context)], seen)
        step_loss = float("inf")
        if cands.shape[0]:
            losses, batch = evaluate_in_batches(objective, cands, batch)
            seen.update(tuple(r) for r in cands.tolist())
            n_evals += cands.shape[0]
            i = int(torch.argmin(losses))
            step_loss = float(losses[i])
            if step_loss < best_loss:
                best_loss, best = step_loss, cands[i]
        text = tokenizer.decode(best.tolist(), clean_up_tokenization_spaces=False)
        trajectory.append(Step(step=step, loss=step_loss, best_loss=best_loss, prompt_ids=tuple(best.tolist()),
                               prompt=text, seconds=time.perf_counter() - t0, n_candidates=int(cands.shape[0])))
        bar.set_postfix(loss=f"{best_loss:.4f}", prompt=repr(text[:40]))
    return AttackResult(
        attack="random", best_ids=tuple(best.tolist()), best_prompt=trajectory[-1].prompt if trajectory else
        tokenizer.decode(best.tolist()), best_loss=best_loss, trajectory=tuple(trajectory),
        seconds=time.perf_counter() - t_start, n_evaluations=n_evals, config=dataclasses.asdict(config),
    )


def natural_retrieval(
    objective: Objective,
    lm: LoadedModel,
    layout: ChatLayout | None,
    config: RetrievalConfig,
    *,
    init: Sequence[int] | None = None,
) -> AttackResult:
    """Score every natural prompt and return the best; `frontier` lists the `keep` best, ranked. Nothing is
    searched, so `layout` plays no part and a start prompt is refused."""
    t_start = time.perf_counter()
    if init is not None:
        raise ValueError("init: natural retrieval takes no start prompt")
    tokenizer = lm.tokenizer
    prompts: Sequence[str] = config.prompts if config.prompts is not None else load_corpus("natural_prompts")
    by_length: dict[int, list[tuple[str, list[int]]]] = {}
    for text in dict.fromkeys(p.strip() for p in prompts):  # unique, in order
        ids = encode(tokenizer, text) if text else []
        if ids:
            by_length.setdefault(len(ids), []).append((text, ids))
    if not by_length:
        raise UserInputError("natural prompts: expected at least one non-empty prompt")
    scored: list[tuple[float, str, tuple[int, ...]]] = []
    trajectory: list[Step] = []
    batch = config.batch_size
    bar = tqdm(sorted(by_length.items()), disable=not config.show_progress, desc="retrieval", dynamic_ncols=True)
    for step, (_, group) in enumerate(bar):
        t0 = time.perf_counter()
        losses, batch = evaluate_in_batches(objective, torch.tensor([ids for _, ids in group]), batch)
        scored.extend((float(l), text, tuple(ids)) for l, (text, ids) in zip(losses.tolist(), group, strict=True))
        best = min(scored)
        trajectory.append(Step(step=step, loss=float(losses.min()), best_loss=best[0], prompt_ids=best[2],
                               prompt=best[1], seconds=time.perf_counter() - t0, n_candidates=len(group)))
        bar.set_postfix(loss=f"{best[0]:.4f}", prompt=repr(best[1][:40]))
    scored.sort()
    ranked = enumerate(scored[: config.keep])
    frontier = tuple(FrontierPoint(prompt=t, ids=i, loss=l, rank=r) for r, (l, t, i) in ranked)
    loss, text, ids = scored[0]
    return AttackResult(
        attack="retrieval", best_ids=ids, best_prompt=text, best_loss=loss, trajectory=tuple(trajectory),
        seconds=time.perf_counter() - t_start, n_evaluations=len(scored),
        config={"n_prompts": len(scored), "batch_size": config.batch_size, "keep": config.keep}, frontier=frontier,
    )
