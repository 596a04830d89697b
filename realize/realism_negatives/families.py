"""The generator families: one run = one objective, one search, a few of its outputs as negatives.

| family | search | prompt | outputs kept per run |
|---|---|---|---|
| `beast` | LM-guided beam search (`attacks.beam`, BEAST-like: next tokens sampled from the LM's top-p, beam by objective) | whole prompt or a suffix after a natural instruction | best, and the beam's best at two earlier lengths |
| `autodan` | genetic search with LM rewrites (`realism_negatives.genetic`, AutoDAN-like) | whole multi-sentence prompt seeded from natural text | the three best of the final population |
| `flrt` | fluency-penalized insert / swap / delete token search (`realism_negatives.flrt`, FLRT-like) | suffix appended to a natural instruction | best, and up to three states along the trajectory |
| `fluent` | this project's fluent Pareto search (`attacks.fluent`) | whole prompt (beam start) or suffix (LM start) | up to three frontier points under perplexity 1,000 |
| `natural` | this project's natural GCG (`attacks.natural`), from a natural prompt | whole prompt | best and up to two other frontier points, when they differ from the start |

Every run draws its settings (search width, length, temperature, fluency weight ...) from small ranges with its
seed, so that a family is a spread of settings, not one. `run_family(lm, family, rng, seed)` returns the rows.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Literal

import torch

from realize.attacks import beam, fluent, natural
from realize.attacks.fluency import encode_head, next_token_logprobs
from realize.attacks.sampling import allowed_token_mask
from realize.data.chat import ChatLayout, chat_layout, encode
from realize.data.corpora import load_corpus
from realize.data.models import LoadedModel
from realize.realism_negatives import flrt, genetic
from realize.realism_negatives.objectives import SuffixObjective, draw_objective, suffix_layout

Family = Literal["beast", "autodan", "flrt", "fluent", "natural"]
FAMILIES: tuple[Family, ...] = ("beast", "autodan", "flrt", "fluent", "natural")
INSTRUCTION_SOURCES = ("natural_prompts", "contexts")  # the instructions suffixes are appended to
SEED_SOURCES = ("natural_prompts", "contexts", "sentences")  # the genetic search's seed sentences


def _instruction(rng: random.Random) -> str:
    return rng.choice(load_corpus(rng.choice(INSTRUCTION_SOURCES)))  # type: ignore[arg-type]


@torch.no_grad()
def _lm_start(lm: LoadedModel, layout: ChatLayout, n: int, gen: torch.Generator) -> list[int]:
    """`n` tokens sampled from the LM where the layout's head ends (the instruction's continuation)."""
    head = encode_head(lm.model, layout.head)
    allowed = allowed_token_mask(lm.tokenizer, vocab_size=int(lm.model.get_input_embeddings().weight.shape[0]))
    ids = torch.zeros(0, dtype=torch.long)
    for _ in range(n):
        lp = next_token_logprobs(lm.model, head, ids.unsqueeze(0))[0, -1].masked_fill(~allowed, float("-inf"))
        ids = torch.cat([ids, torch.multinomial(torch.softmax(lp, -1), 1, generator=gen)])
    return ids.tolist()


def _row(text: str, family: Family, spec: object, settings: dict[str, object], seed: int, instruction: str | None,
         boundary: int | None, step: str, extra: dict[str, object] | None = None) -> dict[str, object]:
    return {"text": text.strip(), "family": family, "objective": {"kind": spec.kind, **spec.detail},  # type: ignore
            "settings": settings, "seed": seed, "placement": "suffix" if instruction else "whole",
            "parent": instruction, "suffix_start": boundary, "output": step, **(extra or {})}


def _suffix_text(lm: LoadedModel, instruction: str, suffix: Sequence[int]) -> tuple[str, int]:
    """The prompt as a user would send it (instruction then suffix) and the character where the suffix starts."""
    prefix = encode(lm.tokenizer, instruction)
    text = lm.tokenizer.decode(prefix + list(suffix))
    head = lm.tokenizer.decode(prefix)
    return text, len(head) if text.startswith(head) else len(instruction)


def run_family(lm: LoadedModel, family: Family, rng: random.Random, seed: int) -> list[dict[str, object]]:
    """One run of `family` with settings and objective drawn from `rng` (see the module table)."""
    tok = lm.tokenizer
    gen = torch.Generator().manual_seed(seed)
    base_layout = chat_layout(tok)
    suffix = family == "flrt" or (family in ("beast", "fluent") and rng.random() < 0.5)
    instruction = _instruction(rng) if suffix else None
    layout = suffix_layout(base_layout, encode(tok, instruction)) if instruction else base_layout
    objective, spec = draw_objective(lm, rng, message=instruction or "")
    rows: list[dict[str, object]] = []

    def emit(ids: Sequence[int], settings: dict[str, object], step: str) -> None:
        if not ids:
            return
        if instruction:
            text, boundary = _suffix_text(lm, instruction, ids)
        else:
            text, boundary = tok.decode(list(ids)), None
        rows.append(_row(text, family, spec, settings, seed, instruction, boundary, step))

    if family == "beast":
        cfg = beam.BeamConfig(beam_width=rng.choice((3, 4, 6)), samples_per_beam=rng.choice((4, 6, 8)),
                              length=rng.randint(8, 18), top_p=rng.choice((0.8, 0.9, 0.95, 1.0)),
                              temperature=rng.choice((0.8, 1.0, 1.2)), stop_prob=0.9, seed=seed)
        result = beam.run(objective, lm, layout, cfg)
        settings = {k: getattr(cfg, k) for k in ("beam_width", "samples_per_beam", "length", "top_p", "temperature")}
        emit(result.best_ids, settings, "best")
        earlier = [s for s in result.trajectory if 5 <= len(s.prompt_ids) < len(result.best_ids) - 1]
        for state in rng.sample(earlier, min(2, len(earlier))):
            emit(state.prompt_ids, settings, "beam_at_length")
    elif family == "flrt":
        cfg = flrt.FLRTConfig(steps=rng.randint(8, 14), width=rng.choice((12, 16)),
                              fluency_weight=rng.choice((0.1, 0.3, 1.0)), max_tokens=rng.randint(10, 20),
                              min_tokens=5, init_tokens=rng.randint(3, 6), seed=seed)
        result = flrt.run(objective, lm, layout, cfg)
        settings = {k: getattr(cfg, k) for k in ("steps", "width", "fluency_weight", "max_tokens", "init_tokens")}
        emit(result.best_ids, settings, "best")
        states = [st[0] for st in result.states if len(st[0]) >= cfg.min_tokens and st[0] != tuple(result.best_ids)]
        picked = list(dict.fromkeys(states[len(states) // 4 :: max(1, len(states) // 4)]))[:3]
        for ids in picked:  # the trajectory: states a quarter, half and three quarters of the way
            emit(ids, settings, "trajectory")
    elif family == "fluent":
        cfg = fluent.FluentConfig(lambdas=(0.0, 0.03, 0.3, 1.0), steps=rng.randint(4, 7), width=rng.choice((8, 12)),
                                  top_k=32, lm_top_k=48, restart_every=0, max_frontier=8, seed=seed,
                                  init_beam=beam.BeamConfig(beam_width=3, samples_per_beam=6,
                                                            length=rng.randint(8, 14), seed=seed))
        init = _lm_start(lm, layout, rng.randint(6, 12), gen) if instruction else None
        result = fluent.run(objective, lm, layout, cfg, init=init)
        settings = {"lambdas": list(cfg.lambdas), "steps": cfg.steps, "width": cfg.width,
                    "start": "lm continuation" if instruction else "beam"}
        points = [p for p in result.frontier if p.perplexity is not None and p.perplexity <= 1000]
        for p in rng.sample(points, min(3, len(points))):
            emit(p.ids, settings | {"fluency_weight": p.fluency_weight}, "frontier")
    elif family == "natural":
        start = rng.choice(load_corpus("natural_prompts"))
        cfg = natural.NaturalConfig(steps=rng.randint(6, 10), width=rng.choice((16, 24)), seed=seed,
                                    fluency_weight=rng.choice((0.02, 0.05, 0.1)), max_frontier=6)
        result = natural.run(objective, lm, layout, cfg, init=encode(tok, start))
        settings = {"steps": cfg.steps, "width": cfg.width, "fluency_weight": cfg.fluency_weight, "start": start}
        others = [p.ids for p in result.frontier if tuple(p.ids) != tuple(result.best_ids)]
        extra = [(ids, "frontier") for ids in rng.sample(others, min(2, len(others)))]
        for ids, step in [(result.best_ids, "best")] + extra:
            if tok.decode(list(ids)).strip() != start.strip():
                emit(ids, settings, step)
    elif family == "autodan":
        n_seeds = rng.randint(2, 4)
        seeds = []
        for _ in range(4):
            parts = [rng.choice(load_corpus(rng.choice(SEED_SOURCES))) for _ in range(n_seeds)]  # type: ignore
            seeds.append(" ".join(parts))
        cfg = genetic.GeneticConfig(population=rng.choice((6, 8)), generations=rng.randint(3, 5),
                                    temperature=rng.choice((0.8, 1.0, 1.2)), seed=seed)
        result = genetic.run(objective, lm, base_layout, seeds, cfg)
        settings = {k: getattr(cfg, k) for k in ("population", "generations", "temperature")}
        known = set(seeds)
        for (text, loss), step in zip(result.ranked[:3], ("best", "second", "third"), strict=False):
            if text not in known and math.isfinite(loss):
                rows.append(_row(text, family, spec, settings, seed, None, None, step))
    else:
        raise ValueError(f"family: expected one of {', '.join(FAMILIES)}, got {family!r}")
    return rows
