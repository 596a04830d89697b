"""Greedy coordinate gradient (GCG) search over prompt tokens, objective-agnostic, with variable-length moves.

Public API (stable):

    GCGConfig(*, steps=100, width=64|512, top_k=64|256, n_replace=2, n_replace_min=1, patience=5, buffer_size=1,
              early_stop_loss=None, seed=0, ascii_only=True, init_length=12, p_length_move=0.2, min_length=1,
              max_length=32, batch_size=0, metrics_every=5, max_resample=4, show_progress=False)
    run(objective, lm, layout, config, *, init=None) -> AttackResult
    initial_ids(tokenizer, layout, config, mask, generator, *, context=()) -> list[int]
    evaluate_in_batches (re-exported from `attacks.base`)

`layout` (None for objectives on the prompt's own text, e.g. the target-string objective) and the objective's
first context (`attacks.base.filter_context`) define the in-context retokenization check; `init` (token ids, e.g.
from a beam search or an encoded text) overrides the start prompt.

Each step (the loop reads like the algorithm):
  1. gradient of the loss w.r.t. the one-hot current prompt (`objective.loss_and_grad`; reused while the current
     prompt does not change — the filters below make the next candidates new anyway);
  2. sample `width` candidates: swaps of `n_replace` random positions with tokens from the per-position top-k of
     -grad among allowed tokens; with probability `p_length_move` a quarter of the width instead goes to
     insertions (gradient-guided token, random slot) and deletions (random slot), within [min_length, max_length]
     — so shorter or longer prompts are reachable;
  3. filter: in-context retokenization round trip (`sampling.retokenization_filter`) and skip anything already
     evaluated; if nothing survives, resample with one more swapped token, up to `max_resample` times, then fall
     back to random allowed-token swaps; a step that still has nothing evaluates nothing (the run never fails);
  4. batched loss, `batch_size` candidates per call (0 = all), halved on out-of-memory;
  5. buffer (nanoGCG's attack buffer): the step's best candidate enters when the buffer is not full or it beats
     the buffer's worst; the next step starts from the buffer's best;
  6. adaptive n_replace: it starts at `n_replace` (several tokens per move explore fast early) and shrinks by one,
     down to `n_replace_min`, after `patience` steps without a new best (fine moves once the coarse ones stall);
  7. early stop when the best loss reaches `early_stop_loss`.

Defaults are CPU-sized (width 64, top-k 64) and GPU-sized (512, 256) when `torch.cuda.is_available()` at
construction. Everything random comes from one torch.Generator seeded with `seed`: on CPU the same seed gives the
same trajectory.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from realize.attacks.base import AttackResult, Objective, Step, evaluate_in_batches, filter_context, start_ids
from realize.attacks.sampling import (
    allowed_token_mask, dedupe, delete_candidates, insert_candidates, random_candidates, retokenization_filter,
    sample_candidates,
)
from realize.data.chat import ChatLayout, encode
from realize.data.models import LoadedModel

logger = logging.getLogger(__name__)

__all__ = ["GCGConfig", "evaluate_in_batches", "initial_ids", "run"]


def _cuda() -> bool:
    return torch.cuda.is_available()


@dataclass(frozen=True, kw_only=True)
class GCGConfig:
    steps: int = 100  # optimization steps
    width: int = field(default_factory=lambda: 512 if _cuda() else 64)  # candidates per step (search width)
    top_k: int = field(default_factory=lambda: 256 if _cuda() else 64)  # top-k tokens per position from -grad
    n_replace: int = 2  # tokens swapped per candidate at the start
    n_replace_min: int = 1  # floor of the adaptive n_replace
    patience: int = 5  # steps without a new best before n_replace shrinks
    buffer_size: int = 1  # attack buffer (1 = greedy)
    early_stop_loss: float | None = None  # stop once the best loss is <= this
    seed: int = 0  # seeds every random draw
    ascii_only: bool = True  # allowed tokens: printable ASCII only, no special tokens
    init_length: int = 12  # start length ("x x x ...") when run gets no `init`
    p_length_move: float = 0.2  # probability that a step also proposes insertions and deletions
    min_length: int = 1  # shortest prompt a deletion may produce
    max_length: int = 32  # longest prompt an insertion may produce
    batch_size: int = 0  # candidates per objective call (0 = all); halved on out-of-memory
    metrics_every: int = 5  # call objective.metrics on the best prompt every this many steps (and at the end)
    max_resample: int = 4  # resampling rounds when no candidate survives the filters
    show_progress: bool = False  # tqdm bar

    def __post_init__(self) -> None:
        positive = ("steps", "width", "top_k", "n_replace", "n_replace_min", "patience", "buffer_size",
                    "init_length", "min_length", "max_length", "metrics_every")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        for name in ("batch_size", "max_resample", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
        if self.n_replace_min > self.n_replace:
            raise ValueError(f"n_replace_min: expected <= n_replace ({self.n_replace}), got {self.n_replace_min}")
        if self.min_length > self.max_length:
            raise ValueError(f"min_length: expected <= max_length ({self.max_length}), got {self.min_length}")
        if not (isinstance(self.p_length_move, int | float) and 0.0 <= self.p_length_move <= 1.0):
            raise ValueError(f"p_length_move: expected a probability in [0, 1], got {self.p_length_move!r}")
        if self.early_stop_loss is not None and not math.isfinite(self.early_stop_loss):
            raise ValueError(f"early_stop_loss: expected a finite number or None, got {self.early_stop_loss!r}")


def initial_ids(
    tokenizer: PreTrainedTokenizerBase,
    layout: ChatLayout | None,
    config: GCGConfig,
    mask: torch.Tensor,
    generator: torch.Generator,
    *,
    context: Sequence[int] = (),
) -> list[int]:
    """The default start prompt: "x x x ..." of `init_length` tokens, else (if that does not round-trip in
    `context`) random allowed tokens that do."""
    ids = encode(tokenizer, "x" + " x" * (config.init_length - 1))[: config.init_length]
    if len(ids) == config.init_length and retokenization_filter(
        tokenizer, layout, torch.tensor([ids]), context=context
    ).all():
        return ids
    for _ in range(100):
        row = random_candidates(1, config.init_length, mask=mask, generator=generator)
        if retokenization_filter(tokenizer, layout, row, context=context).all():
            return row[0].tolist()
    return row[0].tolist()


def _propose(
    current: torch.Tensor,
    grad: torch.Tensor,
    n_replace: int,
    config: GCGConfig,
    mask: torch.Tensor,
    gen: torch.Generator,
    keep: Callable[[torch.Tensor], torch.Tensor],
) -> list[torch.Tensor]:
    """Candidate groups of equal length each (swaps, insertions, deletions), filtered by `keep`."""
    length = current.shape[0]
    n_len = 0
    if config.p_length_move > 0 and torch.rand(1, generator=gen).item() < config.p_length_move:
        n_len = max(1, config.width // 8)
    for attempt in range(config.max_resample + 1):
        groups = [sample_candidates(current, grad, width=max(1, config.width - 2 * n_len), top_k=config.top_k,
                                    n_replace=n_replace + attempt, mask=mask, generator=gen)]
        if n_len and length < config.max_length:
            groups.append(insert_candidates(current, grad, n=n_len, top_k=config.top_k, mask=mask, generator=gen))
        if n_len and length > max(config.min_length, 1):
            groups.append(delete_candidates(current, n=n_len, generator=gen))
        kept = [g for g in (keep(g) for g in groups) if g.shape[0]]
        if kept:
            return kept
    positions = torch.rand((config.width, length), generator=gen).argsort(dim=1)[:, : min(n_replace, length)]
    values = random_candidates(config.width, positions.shape[1], mask=mask, generator=gen)
    fallback = current.cpu().unsqueeze(0).repeat(config.width, 1).scatter_(1, positions, values)
    kept = keep(fallback)
    return [kept] if kept.shape[0] else []


def run(
    objective: Objective,
    lm: LoadedModel,
    layout: ChatLayout | None,
    config: GCGConfig,
    *,
    init: Sequence[int] | None = None,
) -> AttackResult:
    """Run GCG on `objective` (see module docstring) from `init` (token ids) or the default start prompt."""
    t_start = time.perf_counter()
    tokenizer = lm.tokenizer
    context = filter_context(objective)
    gen = torch.Generator().manual_seed(config.seed)
    mask = allowed_token_mask(tokenizer, ascii_only=config.ascii_only)
    given = start_ids(init)
    start = list(given) if given is not None else initial_ids(tokenizer, layout, config, mask, gen, context=context)
    current_loss, grad = objective.loss_and_grad(torch.tensor(start, dtype=torch.long))
    if grad.shape[1] != mask.shape[0]:  # the model's embedding rows may exceed the tokenizer's vocabulary
        mask = torch.cat([mask, mask.new_zeros(max(0, grad.shape[1] - mask.shape[0]))])[: grad.shape[1]]
    seen: set[tuple[int, ...]] = {tuple(start)}
    grad_ids = tuple(start)
    buffer: list[tuple[float, tuple[int, ...]]] = [(current_loss, tuple(start))]
    best_loss, best_ids = current_loss, tuple(start)
    n_replace, stall, n_evals, batch = config.n_replace, 0, 1, config.batch_size
    trajectory: list[Step] = []
    last_metrics: dict[str, float] = {}

    def keep(group: torch.Tensor) -> torch.Tensor:
        ok = retokenization_filter(tokenizer, layout, group, context=context)
        return dedupe(group[ok], seen)

    bar = tqdm(range(config.steps), disable=not config.show_progress, desc="gcg", dynamic_ncols=True)
    for step in bar:
        t0 = time.perf_counter()
        current = torch.tensor(buffer[0][1], dtype=torch.long)
        if buffer[0][1] != grad_ids:  # the gradient is reused while the current prompt does not change
            _, grad = objective.loss_and_grad(current)
            grad_ids = buffer[0][1]
        groups = _propose(current, grad, n_replace, config, mask, gen, keep)
        step_loss, step_ids, n_cands = math.inf, buffer[0][1], 0
        for group in groups:
            losses, batch = evaluate_in_batches(objective, group, batch)
            seen.update(tuple(r) for r in group.tolist())
            n_cands += group.shape[0]
            i = int(torch.argmin(losses))
            if float(losses[i]) < step_loss:
                step_loss, step_ids = float(losses[i]), tuple(group[i].tolist())
        n_evals += n_cands
        if n_cands and (len(buffer) < config.buffer_size or step_loss < buffer[-1][0]):
            buffer = sorted([*buffer, (step_loss, step_ids)])[: config.buffer_size]
        if step_loss < best_loss - 1e-7:
            best_loss, best_ids, stall = step_loss, step_ids, 0
        else:
            stall += 1
            if stall >= config.patience and n_replace > config.n_replace_min:
                n_replace, stall = n_replace - 1, 0
        done = config.early_stop_loss is not None and best_loss <= config.early_stop_loss
        if step % config.metrics_every == 0 or step == config.steps - 1 or done:
            last_metrics = {k: float(v) for k, v in objective.metrics(torch.tensor(best_ids)).items()}
        text = tokenizer.decode(list(buffer[0][1]), clean_up_tokenization_spaces=False)
        trajectory.append(Step(step=step, loss=step_loss, best_loss=best_loss, prompt_ids=buffer[0][1], prompt=text,
                               seconds=time.perf_counter() - t0, n_candidates=n_cands, metrics=dict(last_metrics)))
        bar.set_postfix(loss=f"{best_loss:.4f}", cos=f"{last_metrics.get('cos', float('nan')):.3f}",
                        spec=f"{last_metrics.get('specific_cos', float('nan')):.3f}", prompt=repr(text[:40]))
        if done:
            logger.info("early stop at step %d: loss %.4f <= %s", step, best_loss, config.early_stop_loss)
            break
    cfg = dataclasses.asdict(config)
    cfg["final_n_replace"] = n_replace
    return AttackResult(
        attack="gcg", best_ids=best_ids,
        best_prompt=tokenizer.decode(list(best_ids), clean_up_tokenization_spaces=False),
        best_loss=best_loss, trajectory=tuple(trajectory), seconds=time.perf_counter() - t_start,
        n_evaluations=n_evals, config=cfg,
    )
