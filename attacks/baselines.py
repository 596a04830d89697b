"""Gradient-free baselines: random search over allowed tokens and natural-prompt retrieval.

Public API (stable):

    RandomSearchConfig(*, steps=50, width=64|512, length=12, n_replace=2, seed=0, allow_non_ascii=False,
                       batch_size=0, show_progress=False)
    random_search(objective, tokenizer, config, *, layout=None, filter_context=()) -> AttackResult  (attack "random")
    natural_retrieval(objective, prompts, tokenizer, *, batch_size=64, keep=20, show_progress=False)
        -> AttackResult  (attack "retrieval"; `frontier` = the `keep` best prompts, ranked, with their losses)

Random search is hill climbing without gradients (Andriushchenko-style): start from random allowed tokens; each step
mutates `n_replace` random positions of the current best to random allowed tokens in `width` candidates, keeps
those that survive the retokenization filter, and moves to the best if it improves. Same budget knobs as GCG.

Natural retrieval scores every prompt of a corpus (e.g. `load_corpus("natural_prompts")`): the objective takes
equal-length batches, so prompts are grouped by token length and scored `batch_size` at a time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from realize.attacks.base import AttackResult, Objective, Step
from realize.attacks.gcg import evaluate_in_batches
from realize.attacks.sampling import allowed_token_mask, dedupe, random_candidates, retokenization_filter
from realize.data.chat import ChatLayout, encode
from realize.data.errors import UserInputError

__all__ = ["RandomSearchConfig", "natural_retrieval", "random_search"]


@dataclass(frozen=True, kw_only=True)
class RandomSearchConfig:
    steps: int = 50  # search steps
    width: int = field(default_factory=lambda: 512 if torch.cuda.is_available() else 64)  # candidates per step
    length: int = 12  # prompt length in tokens
    n_replace: int = 2  # positions mutated per candidate
    seed: int = 0  # seeds every random draw
    allow_non_ascii: bool = False  # allow tokens outside printable ASCII
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


def random_search(
    objective: Objective,
    tokenizer: PreTrainedTokenizerBase,
    config: RandomSearchConfig,
    *,
    layout: ChatLayout | None = None,
    filter_context: Sequence[int] = (),
) -> AttackResult:
    """Gradient-free hill climbing over allowed tokens (see module docstring)."""
    t_start = time.perf_counter()
    gen = torch.Generator().manual_seed(config.seed)
    mask = allowed_token_mask(tokenizer, ascii_only=not config.allow_non_ascii)
    start = random_candidates(1, config.length, mask=mask, generator=gen)
    best_loss = float(objective.losses(start)[0])
    best = start[0]
    seen = {tuple(best.tolist())}
    n_evals, batch = 1, config.batch_size
    trajectory: list[Step] = []
    bar = tqdm(range(config.steps), disable=not config.show_progress, desc="random", dynamic_ncols=True)
    for step in bar:
        t0 = time.perf_counter()
        n = min(config.n_replace, config.length)
        positions = torch.rand((config.width, config.length), generator=gen).argsort(dim=1)[:, :n]
        values = random_candidates(config.width, n, mask=mask, generator=gen)
        cands = best.unsqueeze(0).repeat(config.width, 1).scatter_(1, positions, values)
        cands = dedupe(cands[retokenization_filter(tokenizer, layout, cands, context=filter_context)], seen)
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
    prompts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    *,
    batch_size: int = 64,
    keep: int = 20,
    show_progress: bool = False,
) -> AttackResult:
    """Score every natural prompt and return the best; `frontier` lists the `keep` best (prompt, ids, loss)."""
    t_start = time.perf_counter()
    if batch_size < 1 or keep < 1:
        raise ValueError("batch_size and keep: expected ints >= 1")
    by_length: dict[int, list[tuple[str, list[int]]]] = {}
    for text in dict.fromkeys(p.strip() for p in prompts):  # unique, in order
        ids = encode(tokenizer, text) if text else []
        if ids:
            by_length.setdefault(len(ids), []).append((text, ids))
    if not by_length:
        raise UserInputError("natural prompts: expected at least one non-empty prompt")
    scored: list[tuple[float, str, tuple[int, ...]]] = []
    trajectory: list[Step] = []
    batch = batch_size
    bar = tqdm(sorted(by_length.items()), disable=not show_progress, desc="retrieval", dynamic_ncols=True)
    for step, (_, group) in enumerate(bar):
        t0 = time.perf_counter()
        losses, batch = evaluate_in_batches(objective, torch.tensor([ids for _, ids in group]), batch)
        scored.extend((float(l), text, tuple(ids)) for l, (text, ids) in zip(losses.tolist(), group, strict=True))
        best = min(scored)
        trajectory.append(Step(step=step, loss=float(losses.min()), best_loss=best[0], prompt_ids=best[2],
                               prompt=best[1], seconds=time.perf_counter() - t0, n_candidates=len(group)))
        bar.set_postfix(loss=f"{best[0]:.4f}", prompt=repr(best[1][:40]))
    scored.sort()
    frontier = tuple({"rank": r, "prompt": t, "ids": list(i), "loss": l} for r, (l, t, i) in enumerate(scored[:keep]))
    loss, text, ids = scored[0]
    return AttackResult(
        attack="retrieval", best_ids=ids, best_prompt=text, best_loss=loss, trajectory=tuple(trajectory),
        seconds=time.perf_counter() - t_start, n_evaluations=len(scored),
        config={"n_prompts": len(scored), "batch_size": batch_size, "keep": keep}, frontier=frontier,
    )
