"""Behavior recovery: does the prompt make the model *do* what the steering vector makes it do?

For each held-out context c_k (a user message in the chat template):

1. the steered model (vector added, no prompt) writes y_k greedily, `max_new_tokens` tokens (cut after EOS);
2. y_k is teacher-forced through three models: steered (base input + vector), prompted (the prompt placed in
   the turn via `data.chat`, no vector) and base (no prompt, no vector); at each position t of y_k we take the
   next-token distributions S_t, P_t, B_t;
3. per context, `r_k = 1 - sum_t KL(S_t || P_t) / sum_t KL(S_t || B_t)` (the ratio of the position-averaged KLs).
   1 = the prompt reproduces the steered distributions, 0 = no better than no prompt, < 0 = worse than no prompt.
   r_k <= 1 always; it is undefined (nan, skipped in the mean, with a warning) when the vector changes nothing
   (sum_t KL(S_t || B_t) < 1e-9). When the vector changes little (mean KL(S||B) below `min_effect_kl` nats per
   token) the result is flagged `inert`: any prompt's own effect then dwarfs the vector's and r_k is very negative.
   Measured on SmolLM2: the mean shift of a natural prompt at layer 8 (norm ~5 against residual norms ~130) moves
   the outputs by ~0.003 nats/token at scale 1 — inert — so behavior recovery needs vectors that do something.

The headline is the mean of r_k over contexts with a percentile bootstrap interval over contexts; the pooled
ratio over all positions of all contexts is reported too. The three greedy generations (steered, prompted, base)
are returned per context for reports.

Work sharing: the generations run batched over contexts (left padding); the teacher-forced base and prompted
forwards share one batch (right padding), the steered one is a second batch under the steering hook.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from realize.data.chat import ChatLayout, Placement, chat_layout, encode
from realize.data.models import LoadedModel
from realize.data.resample import bootstrap_mean_interval
from realize.data.steered import SteeredContext, forced_logprobs, greedy_batch, steered_contexts

logger = logging.getLogger(__name__)
_MIN_KL = 1e-9


@dataclass(frozen=True, kw_only=True)
class BehaviorConfig:
    max_new_tokens: int = 32  # T: tokens the steered model generates per context
    n_bootstrap: int = 1000  # bootstrap resamples of the contexts for the interval
    confidence: float = 0.95  # interval coverage
    seed: int = 0  # bootstrap RNG seed
    batch_size: int = 16  # rows per forward / generate call
    min_effect_kl: float = 0.01  # mean KL(S||B) per token (nats) below which the vector is flagged inert

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: expected >= 1, got {self.max_new_tokens}")
        if self.n_bootstrap < 1:
            raise ValueError(f"n_bootstrap: expected >= 1, got {self.n_bootstrap}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence: expected in (0, 1), got {self.confidence}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {self.batch_size}")
        if self.min_effect_kl < 0:
            raise ValueError(f"min_effect_kl: expected >= 0, got {self.min_effect_kl}")


@dataclass(frozen=True)
class ContextBehavior:
    """One held-out context: its recovery, mean KLs over the positions of y, and the three generations."""

    context: str
    recovery: float  # nan when the vector does not change this context's distributions
    kl_steered_prompted: float  # mean over positions of KL(S_t || P_t), nats
    kl_steered_base: float  # mean over positions of KL(S_t || B_t), nats
    n_positions: int
    steered: str  # y: the steered model's greedy continuation
    prompted: str  # the prompted model's own greedy continuation
    base: str  # the base model's own greedy continuation


@dataclass(frozen=True)
class BehaviorResult:
    prompt: str
    placement: Placement
    scale: float
    recovery: float  # mean of the finite per-context recoveries (nan if none)
    interval: tuple[float, float]  # bootstrap interval of that mean over contexts
    pooled_recovery: float  # 1 - sum KL(S||P) / sum KL(S||B) over all positions of all contexts
    per_context: tuple[ContextBehavior, ...]
    inert: bool  # mean KL(S||B) per token < config.min_effect_kl: the vector barely changes behavior at this
    # scale, so any prompt's own effect dominates and recovery is strongly negative (read it as "no behavior")


def kl_rows(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax p || softmax q) per row, (..., V) -> (...), in nats."""
    lp, lq = torch.log_softmax(p_logits.double(), -1), torch.log_softmax(q_logits.double(), -1)
    return (lp.exp() * (lp - lq)).sum(-1).clamp_min(0.0)


def recovery_from_logits(
    steered: torch.Tensor, prompted: torch.Tensor, base: torch.Tensor
) -> tuple[float, float, float]:
    """(recovery, mean KL(S||P), mean KL(S||B)) for one context from next-token logits (T, V) at y's positions."""
    kl_sp, kl_sb = kl_rows(steered, prompted), kl_rows(steered, base)
    denom = float(kl_sb.sum())
    recovery = math.nan if denom < _MIN_KL else 1.0 - float(kl_sp.sum()) / denom
    return recovery, float(kl_sp.mean()), float(kl_sb.mean())


def bootstrap_interval(values: Sequence[float], n: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of finite `values` (nan, nan if there are none)."""
    return bootstrap_mean_interval(values, n, confidence, seed)


def forced_logits(lm: LoadedModel, inputs: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                  batch_size: int = 16) -> list[torch.Tensor]:
    """Next-token log-probs (len(y), V) predicting each continuation y after its input (log-softmaxed logits: every
    formula here is invariant to the shift)."""
    return forced_logprobs(lm, inputs, continuations, batch_size)


@dataclass(frozen=True)
class BehaviorMeasure:
    """One prompt against one vector's steered contexts (all means are per token of y)."""

    recovery: float  # pooled: 1 - sum_k KL(S||P)_k / sum_k KL(S||B)_k over every position of every context (nan
    # when the vector changes nothing); one context the vector barely moves cannot sink it, as a mean of ratios can
    per_context: tuple[float, ...]  # r_k = 1 - KL(S||P)_k / KL(S||B)_k, nan where the vector changes nothing
    kl_sums: tuple[float, ...]  # per context: sum over y's positions of KL(S || P) (the pooled numerators)
    effect_sums: tuple[float, ...]  # per context: sum over y's positions of KL(S || B) (the pooled denominators)
    kl: float  # mean KL(S || P)
    effect: float  # mean KL(S || B): the vector's own effect
    prompt_effect: float  # mean KL(P || B) along y: the prompt's effect
    direction_cos: float  # cos over y's tokens of (log S - log B)(y_t) and (log P - log B)(y_t)
    effect_ratio: float  # <b, a> / <a, a> of those two: 1 = same push, > 1 = the prompt pushes harder


def measure_prompts(lm: LoadedModel, layout: ChatLayout, contexts: Sequence[SteeredContext],
                    prompts: Sequence[Sequence[int]], batch_size: int = 16) -> list[BehaviorMeasure]:
    """Behavior recovery, effect sizes and direction of effect of each prompt (token ids) along the steered
    continuations `contexts` (`realize.data.steered.steered_contexts`)."""
    ys = [c.continuation for c in contexts]
    forced = [row for p in prompts  # one prompt's rows per call: they share its prefix (run once)
              for row in forced_logprobs(lm, [layout.place(list(p), c.context_ids).ids for c in contexts], ys,
                                         batch_size)]
    out = []
    k = len(contexts)
    for i in range(len(prompts)):
        rows = forced[i * k : (i + 1) * k]
        r, sp, sb, pb, a_all, b_all, nums, dens = [], 0.0, 0.0, 0.0, [], [], [], []
        for c, logp in zip(contexts, rows, strict=True):
            kl_sp = (c.steered.exp() * (c.steered - logp)).sum(-1).clamp_min(0.0)
            kl_sb = c.effect
            kl_pb = (logp.exp() * (logp - c.base)).sum(-1).clamp_min(0.0)
            denom = float(kl_sb.sum())
            r.append(math.nan if denom < _MIN_KL else 1.0 - float(kl_sp.sum()) / denom)
            sp, sb, pb = sp + float(kl_sp.sum()), sb + denom, pb + float(kl_pb.sum())
            nums.append(float(kl_sp.sum()))
            dens.append(denom)
            y = torch.tensor(c.continuation).unsqueeze(1)
            a_all.append((c.steered.gather(1, y) - c.base.gather(1, y)).squeeze(1).double())
            b_all.append((logp.gather(1, y) - c.base.gather(1, y)).squeeze(1).double())
        a, b = torch.cat(a_all), torch.cat(b_all)
        n = a.numel()
        aa = float(a @ a)
        out.append(BehaviorMeasure(
            recovery=math.nan if sb < _MIN_KL else 1.0 - sp / sb, per_context=tuple(r), kl_sums=tuple(nums),
            effect_sums=tuple(dens), kl=sp / n,
            effect=sb / n, prompt_effect=pb / n,
            direction_cos=float(a @ b) / math.sqrt(aa * float(b @ b)) if aa > 0 and float(b @ b) > 0 else 0.0,
            effect_ratio=float(a @ b) / aa if aa > 0 else math.nan,
        ))
    return out


def behavior_recovery(
    lm: LoadedModel,
    directions: Mapping[int, torch.Tensor],
    scale: float,
    prompt: str,
    contexts: Sequence[str],
    placement: Placement = "prefix",
    config: BehaviorConfig | None = None,
) -> BehaviorResult:
    """Behavior recovery of `prompt` against the vector `scale * directions` on `contexts` (module docstring)."""
    config = config or BehaviorConfig()
    if not contexts:
        raise ValueError("contexts: expected at least one context")
    tok = lm.tokenizer
    layout = chat_layout(tok, placement)
    prompt_ids = encode(tok, prompt)
    T, bs = config.max_new_tokens, config.batch_size
    steered = steered_contexts(lm, layout, directions, scale, contexts, T, batch_size=bs)
    ys = [list(c.continuation) for c in steered]
    steered_logits = [c.steered for c in steered]
    base_in = [list(c.base_ids) for c in steered]
    prompted_in = [list(layout.place(prompt_ids, c.context_ids).ids) for c in steered]
    own = greedy_batch(lm, prompted_in + base_in, T, bs)  # the prompted and base models' own replies
    forced = forced_logits(lm, prompted_in, ys, bs) + [c.base for c in steered]
    k = len(contexts)
    per_context: list[ContextBehavior] = []
    sum_sp = sum_sb = 0.0
    for i in range(k):
        s, p, b = steered_logits[i], forced[i], forced[k + i]
        recovery, kl_sp, kl_sb = recovery_from_logits(s, p, b)
        sum_sp, sum_sb = sum_sp + kl_sp * len(ys[i]), sum_sb + kl_sb * len(ys[i])
        if math.isnan(recovery):
            logger.warning("context %d: the vector does not change the next-token distributions; skipped", i)
        per_context.append(
            ContextBehavior(
                context=contexts[i],
                recovery=recovery,
                kl_steered_prompted=kl_sp,
                kl_steered_base=kl_sb,
                n_positions=len(ys[i]),
                steered=tok.decode(ys[i], skip_special_tokens=True).strip(),
                prompted=tok.decode(own[i], skip_special_tokens=True).strip(),
                base=tok.decode(own[k + i], skip_special_tokens=True).strip(),
            )
        )
    finite = [c.recovery for c in per_context if math.isfinite(c.recovery)]
    n_positions = sum(len(y) for y in ys)
    inert = sum_sb / max(n_positions, 1) < config.min_effect_kl
    if inert:
        logger.warning("the vector changes the next-token distributions by only %.4f nats/token (KL steered||base) "
                       "at scale %g: recovery is not meaningful", sum_sb / max(n_positions, 1), scale)
    return BehaviorResult(
        prompt=prompt,
        placement=placement,
        scale=float(scale),
        recovery=sum(finite) / len(finite) if finite else math.nan,
        interval=bootstrap_interval(
            [c.recovery for c in per_context], config.n_bootstrap, config.confidence, config.seed
        ),
        pooled_recovery=math.nan if sum_sb < _MIN_KL else 1.0 - sum_sp / sum_sb,
        per_context=tuple(per_context),
        inert=inert,
    )
