"""Genetic search with LM rewrites (AutoDAN-like, Liu et al. 2024, CPU-sized): a population of multi-sentence
prompts evolves by sentence-level crossover, word-level replacement by the LM's own proposals, and LM rewrites.

    GeneticConfig(*, population=8, generations=5, elite=2, p_crossover=0.5, p_word=0.5, p_rewrite=0.35,
                  words_per_mutation=2, lm_top_k=20, rewrite_tokens=24, temperature=1.0, seed=0)
    run(objective, lm, seeds, config) -> GeneticResult

Each generation (the loop reads like the algorithm):
  1. fitness: the objective's loss of every member (members of one token length are scored together);
  2. the `elite` best survive unchanged; parents are drawn by a softmax over -loss / (loss spread);
  3. child = sentence-level crossover of two parents (each sentence slot from either parent), then with
     `p_word` some words replaced by a token the LM proposes at that slot (its top-k, sampled), then with
     `p_rewrite` one sentence rewritten by the LM: cut at a random word and continued by sampling until the
     sentence ends (AutoDAN's LLM-based mutation, with the embedded model as the rewriter).
Every member scored is archived; the result lists the final population ranked by loss.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from realize.attacks.fluency import encode_head, next_token_logprobs
from realize.data.chat import ChatLayout, encode
from realize.data.models import LoadedModel

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True, kw_only=True)
class GeneticConfig:
    population: int = 8  # members per generation
    generations: int = 5  # rounds of selection, crossover and mutation
    elite: int = 2  # best members copied unchanged into the next generation
    p_crossover: float = 0.5  # chance a child mixes the sentences of two parents
    p_word: float = 0.5  # chance a child gets word replacements from the LM's proposals
    p_rewrite: float = 0.35  # chance a child gets one sentence rewritten by the LM
    words_per_mutation: int = 2  # words replaced by one word mutation
    lm_top_k: int = 20  # the LM's top-k next tokens a replacement word is drawn from
    rewrite_tokens: int = 24  # most tokens an LM rewrite may add
    temperature: float = 1.0  # sampling temperature of rewrites
    max_tokens: int = 96  # longer members are cut (token ids) before scoring
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("population", "generations", "words_per_mutation", "lm_top_k", "rewrite_tokens", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if not 0 <= self.elite < self.population:
            raise ValueError(f"elite: expected in [0, population), got {self.elite}")
        for name in ("p_crossover", "p_word", "p_rewrite"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected in [0, 1], got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature: expected > 0, got {self.temperature}")


@dataclass(frozen=True)
class GeneticResult:
    ranked: tuple[tuple[str, float], ...]  # final population (text, loss), best first
    generations: tuple[tuple[str, float], ...]  # best member after each generation
    seconds: float
    n_evaluations: int
    config: dict[str, object]


def sentences(text: str) -> list[str]:
    """Sentences of a prompt (split after . ! ? followed by space)."""
    return [s for s in _SENTENCE.split(text.strip()) if s]


def crossover(a: str, b: str, rng: random.Random) -> str:
    """Sentence slots of the longer parent, each filled from either parent (the shorter one where it has one)."""
    sa, sb = sentences(a), sentences(b)
    n = max(len(sa), len(sb))
    out = []
    for i in range(n):
        pool = [s[i] for s in (sa, sb) if i < len(s)]
        out.append(rng.choice(pool))
    return " ".join(out)


@torch.no_grad()
def _losses(objective: object, lm: LoadedModel, texts: Sequence[str], max_tokens: int) -> list[float]:
    ids = [encode(lm.tokenizer, t)[:max_tokens] for t in texts]
    out = [math.inf] * len(texts)
    by_len: dict[int, list[int]] = {}
    for i, row in enumerate(ids):
        if row:
            by_len.setdefault(len(row), []).append(i)
    for length, idx in by_len.items():
        losses = objective.losses(torch.tensor([ids[i] for i in idx], dtype=torch.long))  # type: ignore[attr-defined]
        for i, v in zip(idx, losses.tolist(), strict=True):
            out[i] = float(v)
    return out


@torch.no_grad()
def word_mutation(text: str, lm: LoadedModel, layout: ChatLayout, config: GeneticConfig, rng: random.Random,
                  gen: torch.Generator) -> str:
    """Replace `words_per_mutation` words (not the first) by a whole word the LM proposes at that slot."""
    words = text.split(" ")
    if len(words) < 3:
        return text
    tok = lm.tokenizer
    head = encode_head(lm.model, layout.head)
    for slot in rng.sample(range(1, len(words)), min(config.words_per_mutation, len(words) - 1)):
        prefix = torch.tensor([encode(tok, " ".join(words[:slot]))], dtype=torch.long)
        logprobs = next_token_logprobs(lm.model, head, prefix)[0, -1]
        top = logprobs.topk(config.lm_top_k).indices.tolist()
        choices = [t for t in top if (s := tok.decode([t])).startswith(" ") and s[1:].isalpha()]
        if choices:
            pick = choices[int(torch.randint(0, len(choices), (1,), generator=gen))]
            trail = re.sub(r"^[A-Za-z']+", "", words[slot])  # keep the word's trailing punctuation
            words[slot] = tok.decode([pick]).strip() + trail
    return " ".join(words)


@torch.no_grad()
def rewrite(text: str, lm: LoadedModel, layout: ChatLayout, config: GeneticConfig, rng: random.Random) -> str:
    """One sentence cut at a random word and continued by the LM (sampled) to the end of a sentence."""
    parts = sentences(text)
    if not parts:
        return text
    k = rng.randrange(len(parts))
    words = parts[k].split(" ")
    keep = " ".join(words[: rng.randint(1, max(1, len(words) - 1))])
    before = " ".join(parts[:k] + [keep])
    ids = torch.tensor([list(layout.head) + encode(lm.tokenizer, before)], dtype=torch.long)
    stop = [i for i in (lm.tokenizer.eos_token_id, lm.tokenizer.pad_token_id) if i is not None]
    out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_p=0.95, top_k=0,
                            temperature=config.temperature, max_new_tokens=config.rewrite_tokens,
                            pad_token_id=lm.tokenizer.pad_token_id, eos_token_id=stop)[0, ids.shape[1]:]
    added = lm.tokenizer.decode(out.tolist(), skip_special_tokens=True).split("\n")[0]
    end = re.search(r"[.!?](\s|$)", added)
    added = added[: end.end()].rstrip() if end else added.rstrip()
    return " ".join([before + added] + parts[k + 1:]).strip()


def run(objective: object, lm: LoadedModel, layout: ChatLayout, seeds: Sequence[str],
        config: GeneticConfig) -> GeneticResult:
    """Evolve prompts from `seeds` (natural multi-sentence prompts) against `objective` (lower is better)."""
    started = time.perf_counter()
    rng = random.Random(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        population = [seeds[i % len(seeds)] for i in range(config.population)]
        population = [population[0]] + [rewrite(p, lm, layout, config, rng) if i % 2 else
                                        word_mutation(p, lm, layout, config, rng, gen)
                                        for i, p in enumerate(population[1:], 1)]
        losses = _losses(objective, lm, population, config.max_tokens)
        n_evals, best = len(population), []
        for _ in range(config.generations):
            order = sorted(range(len(population)), key=lambda i: losses[i])
            finite = [losses[i] for i in order if math.isfinite(losses[i])]
            spread = (max(finite) - min(finite)) if len(finite) > 1 else 1.0
            weights = [math.exp(-(losses[i] - finite[0]) / max(spread, 1e-6) * 3) if math.isfinite(losses[i])
                       else 0.0 for i in range(len(population))]
            children = [population[i] for i in order[: config.elite]]
            while len(children) < config.population:
                a, b = rng.choices(population, weights=weights, k=2) if sum(weights) > 0 else rng.sample(
                    population, 2)
                child = crossover(a, b, rng) if rng.random() < config.p_crossover else a
                if rng.random() < config.p_word:
                    child = word_mutation(child, lm, layout, config, rng, gen)
                if rng.random() < config.p_rewrite:
                    child = rewrite(child, lm, layout, config, rng)
                children.append(child.strip() or a)
            new = children[config.elite:]
            new_losses = _losses(objective, lm, new, config.max_tokens)
            n_evals += len(new)
            population = children
            losses = [losses[i] for i in order[: config.elite]] + new_losses
            top = min(range(len(population)), key=lambda i: losses[i])
            best.append((population[top], losses[top]))
    ranked = sorted(zip(population, losses, strict=True), key=lambda x: x[1])
    return GeneticResult(tuple(ranked), tuple(best), time.perf_counter() - started, n_evals, asdict(config))
