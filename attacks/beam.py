"""LM-guided beam search (BEAST-style, Sadasivan et al. 2024): fluent by construction, cheap, gradient-free.

The prompt grows one token at a time. At each step the LM itself proposes the next token: for every prompt in the
beam we read its next-token distribution *in the prompt's real position* (after the chat template's head, i.e.
the model is writing the user's message; see `attacks.fluency.lm_head_ids`), restrict it to allowed tokens, keep
its top-p nucleus and sample candidates without replacement. All extended prompts are scored by the objective and
the best `beam_width` form the next beam. A prompt stops growing when the LM puts at least `stop_prob` of its
mass on an end-of-turn token. The result is the best prompt of any length seen (ties: the shorter one).

Cost per step: one LM forward over the beam (head keys/values reused) + `beam_width * samples_per_beam` objective
evaluations.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from realize.attacks.base import AttackResult, Objective, Step, filter_context, start_ids
from realize.attacks.fluency import encode_head, lm_head_ids, next_token_logprobs
from realize.attacks.sampling import allowed_token_mask, dedupe, retokenization_filter
from realize.data.chat import ChatLayout
from realize.data.models import LoadedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class BeamConfig:
    """Settings of the LM-guided beam search."""

    beam_width: int = 8  # prompts kept after each step (k1)
    samples_per_beam: int = 16  # next tokens sampled per kept prompt (k2)
    length: int = 12  # maximum prompt length in tokens
    top_p: float = 0.9  # nucleus of the LM's next-token distribution to sample from
    temperature: float = 1.0  # softmax temperature of the LM's next-token distribution
    stop_prob: float = 0.5  # a prompt stops growing when P(end-of-turn token next) >= this
    ascii_only: bool = True  # sample only tokens that decode to printable ASCII
    seed: int = 0  # seed of the sampler
    show_progress: bool = False  # tqdm bar over steps

    def __post_init__(self) -> None:
        for name in ("beam_width", "samples_per_beam", "length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p: expected in (0, 1], got {self.top_p}")
        if self.temperature <= 0.0:
            raise ValueError(f"temperature: expected > 0, got {self.temperature}")
        if not 0.0 < self.stop_prob <= 1.0:
            raise ValueError(f"stop_prob: expected in (0, 1], got {self.stop_prob}")


def stop_token_ids(tokenizer: object) -> list[int]:
    """Ids that end a user turn: the tokenizer's special tokens (EOS, end-of-turn, BOS, pad)."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        ids.add(int(eos))
    return sorted(ids)


def nucleus_sample(
    logprobs: torch.Tensor,
    allowed: torch.Tensor,
    n: int,
    *,
    top_p: float,
    temperature: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Sample up to `n` distinct tokens from one next-token distribution.

    logprobs (V,) float, allowed (V,) bool -> ids (m,) long, 1 <= m <= n: the distribution at `temperature`,
    restricted to allowed tokens and renormalized, cut to its top-p nucleus (at least one token), sampled without
    replacement. Fewer than `n` come back when the nucleus is smaller than `n`.
    """
    scaled = (logprobs.float() / temperature).masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    sorted_probs, order = probs.sort(descending=True)
    before = sorted_probs.cumsum(0) - sorted_probs  # mass strictly above each token
    keep = before < top_p
    keep[0] = True
    nucleus = torch.zeros_like(probs)
    nucleus[order[keep]] = sorted_probs[keep]
    m = min(n, int(keep.sum().item()))
    return torch.multinomial(nucleus, m, replacement=False, generator=generator)


def run(
    objective: Objective,
    lm: LoadedModel,
    layout: ChatLayout,
    config: BeamConfig,
    *,
    init: Sequence[int] | None = None,
) -> AttackResult:
    """Grow prompts token by token from the LM's own proposals; keep a beam by objective loss. The search grows
    from the empty prompt, so a start prompt (`init`) is refused."""
    started = time.perf_counter()
    if init is not None:
        raise ValueError("init: the beam search grows its prompts from nothing and takes no start prompt")
    context = filter_context(objective)
    model, tokenizer = lm.model, lm.tokenizer
    generator = torch.Generator().manual_seed(config.seed)
    head = encode_head(model, lm_head_ids(layout))
    vocab = int(model.get_input_embeddings().weight.shape[0])
    allowed = allowed_token_mask(tokenizer, ascii_only=config.ascii_only, vocab_size=vocab)
    stops = torch.tensor(stop_token_ids(tokenizer), dtype=torch.long)
    allowed[stops] = False

    beam = torch.zeros((1, 0), dtype=torch.long)
    best_ids: tuple[int, ...] = ()
    best_loss = math.inf
    trajectory: list[Step] = []
    n_evaluations = 0
    for step in tqdm(range(config.length), disable=not config.show_progress, desc="beam"):
        step_start = time.perf_counter()
        with torch.no_grad():
            logprobs = next_token_logprobs(model, head, beam)[:, -1].cpu()  # (nb, V)
        if step > 0:
            ending = logprobs[:, stops].exp().sum(dim=-1) >= config.stop_prob
            beam, logprobs = beam[~ending], logprobs[~ending]
            if beam.shape[0] == 0:
                logger.info("beam: every prompt ended after %d tokens", step)
                break
        per_beam = math.ceil(config.beam_width * config.samples_per_beam / beam.shape[0])
        rows = []
        for prompt, lp in zip(beam, logprobs, strict=True):
            tokens = nucleus_sample(
                lp, allowed, per_beam, top_p=config.top_p, temperature=config.temperature, generator=generator
            )
            rows.append(torch.cat([prompt.unsqueeze(0).expand(tokens.shape[0], -1), tokens.unsqueeze(1)], dim=1))
        candidates = dedupe(torch.cat(rows, dim=0), set())
        survives = retokenization_filter(tokenizer, layout, candidates, context=context)
        if survives.any():  # never fail: fall back to the unfiltered set when nothing survives
            candidates = candidates[survives]
        losses = objective.losses(candidates)
        n_evaluations += candidates.shape[0]
        order = losses.argsort()
        beam = candidates[order[: config.beam_width]]
        step_loss = float(losses[order[0]].item())
        if step_loss < best_loss:
            best_loss, best_ids = step_loss, tuple(int(t) for t in beam[0].tolist())
        trajectory.append(
            Step(
                step=step,
                loss=step_loss,
                best_loss=best_loss,
                prompt_ids=tuple(int(t) for t in beam[0].tolist()),
                prompt=tokenizer.decode(beam[0].tolist()),
                seconds=time.perf_counter() - step_start,
                n_candidates=int(candidates.shape[0]),
            )
        )
        logger.debug("beam step %d: loss %.4f best %.4f %r", step, step_loss, best_loss, trajectory[-1].prompt)
    return AttackResult(
        attack="beam",
        best_ids=best_ids,
        best_prompt=tokenizer.decode(list(best_ids)),
        best_loss=best_loss,
        trajectory=tuple(trajectory),
        seconds=time.perf_counter() - started,
        n_evaluations=n_evaluations,
        config=asdict(config),
    )


def start_or_beam(objective: Objective, lm: LoadedModel, layout: ChatLayout, config: BeamConfig,
                  init: Sequence[int] | None) -> tuple[tuple[int, ...], int]:
    """(start prompt ids, evaluations spent): `init` as given, else the beam search's best prompt."""
    start = start_ids(init)
    if start is not None:
        return start, 0
    first = run(objective, lm, layout, config)
    return first.best_ids, first.n_evaluations
