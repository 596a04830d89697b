"""Fluency-penalized token search with insert / swap / delete moves on a suffix appended to a natural instruction
(FLRT-like, Thompson & Sklar 2024, CPU-sized).

    FLRTConfig(*, steps=12, width=16, lm_top_k=32, top_k=16, p_insert=0.35, p_delete=0.15, fluency_weight=0.3,
               min_tokens=5, max_tokens=18, init_tokens=4, seed=0)
    run(objective, lm, layout, config) -> FLRTResult

`objective` scores the suffix (`realism_negatives.objectives.SuffixObjective` puts the instruction before it) and
`layout` is the instruction-extended layout (`suffix_layout`), so the LM reads the suffix after the instruction.
The start is `init_tokens` tokens the LM samples after the instruction. Each step (the loop reads like the
algorithm):
  1. the objective's gradient w.r.t. the one-hot suffix and the LM's next-token log-probs at every suffix slot;
  2. candidates: swaps (a token of the LM's top-k at the slot, ranked by the gradient: `attacks.fluent.lm_restricted`),
     inserts (the LM's top-k at the new slot, ranked by the gradient there) and deletes, in the shares set;
  3. score = objective loss + fluency_weight * CE(suffix | instruction) (+ a penalty below `min_tokens`);
  4. move to the best candidate when it lowers the score (greedy), else stay.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from realize.attacks.fluency import encode_head, next_token_logprobs, prompt_surprisal
from realize.attacks.fluent import lm_restricted
from realize.attacks.sampling import allowed_token_mask, retokenization_filter
from realize.data.chat import ChatLayout
from realize.data.models import LoadedModel


@dataclass(frozen=True, kw_only=True)
class FLRTConfig:
    steps: int = 12  # search steps
    width: int = 16  # candidates per step
    lm_top_k: int = 32  # the LM's top-k tokens per slot that a new token may come from
    top_k: int = 16  # of those, the gradient's top-k
    p_insert: float = 0.35  # share of insert moves
    p_delete: float = 0.15  # share of delete moves
    fluency_weight: float = 0.3  # score = loss + this * mean surprisal of the suffix after the instruction
    min_tokens: int = 5  # shorter suffixes pay a penalty of 1 per missing token
    max_tokens: int = 18  # inserts stop here
    init_tokens: int = 4  # start: this many tokens sampled from the LM after the instruction
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "width", "lm_top_k", "top_k", "min_tokens", "max_tokens", "init_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.top_k > self.lm_top_k:
            raise ValueError(f"top_k: expected <= lm_top_k ({self.lm_top_k}), got {self.top_k}")
        if not (0 <= self.p_insert and 0 <= self.p_delete and self.p_insert + self.p_delete <= 1):
            raise ValueError("p_insert, p_delete: expected shares >= 0 summing to <= 1")
        if self.fluency_weight < 0:
            raise ValueError(f"fluency_weight: expected >= 0, got {self.fluency_weight}")


@dataclass(frozen=True)
class FLRTResult:
    best_ids: tuple[int, ...]
    best_score: float
    states: tuple[tuple[tuple[int, ...], float, float], ...]  # (suffix ids, loss, ce) after each step
    seconds: float
    n_evaluations: int
    config: dict[str, object]


def _pick(scores: torch.Tensor, k: int, gen: torch.Generator) -> int | None:
    """A token among the k lowest finite scores (V,), uniformly; None when none is finite."""
    finite = torch.isfinite(scores)
    if not bool(finite.any()):
        return None
    top = scores.masked_fill(~finite, float("inf")).topk(min(k, int(finite.sum())), largest=False).indices
    return int(top[torch.randint(0, top.numel(), (1,), generator=gen)])


def run(objective: object, lm: LoadedModel, layout: ChatLayout, config: FLRTConfig) -> FLRTResult:
    started = time.perf_counter()
    model, tok = lm.model, lm.tokenizer
    gen = torch.Generator().manual_seed(config.seed)
    head = encode_head(model, layout.head)
    vocab = int(model.get_input_embeddings().weight.shape[0])
    allowed = allowed_token_mask(tok, vocab_size=vocab)
    context = tuple(getattr(objective, "context_ids", ()) or ((),))[0]
    with torch.no_grad():  # start: the LM's own continuation of the instruction
        ids = torch.zeros(0, dtype=torch.long)
        for _ in range(config.init_tokens):
            lp = next_token_logprobs(model, head, ids.unsqueeze(0))[0, -1].masked_fill(~allowed, float("-inf"))
            nxt = torch.multinomial(torch.softmax(lp, -1), 1, generator=gen)
            ids = torch.cat([ids, nxt])

    def score(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss, ce = torch.empty(len(rows)), torch.empty(len(rows))
        by_len: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            by_len.setdefault(r.numel(), []).append(i)
        for _, idx in by_len.items():
            batch = torch.stack([rows[i] for i in idx])
            loss[idx] = objective.losses(batch).float().cpu()  # type: ignore[attr-defined]
            ce[idx] = prompt_surprisal(model, head, batch).mean(dim=1)
        lengths = torch.tensor([float(r.numel()) for r in rows])
        total = loss + config.fluency_weight * ce + (config.min_tokens - lengths).clamp(min=0)
        return total, loss, ce

    total, loss, ce = score([ids])
    cur = (float(total[0]), float(loss[0]), float(ce[0]))
    best_ids, best_score = tuple(ids.tolist()), cur[0] if ids.numel() >= config.min_tokens else float("inf")
    states, n_evals = [], 1
    for _ in range(config.steps):
        _, grad = objective.loss_and_grad(ids)  # type: ignore[attr-defined]
        with torch.no_grad():
            lp = next_token_logprobs(model, head, ids.unsqueeze(0))[0].cpu()  # (L + 1, V)
        length = ids.numel()
        ranked = lm_restricted(grad.float().cpu(), lp[:length], allowed, config.lm_top_k)  # (L, V)
        cands: list[torch.Tensor] = []
        for _ in range(config.width):
            u = float(torch.rand(1, generator=gen))
            if u < config.p_insert and length < config.max_tokens:
                slot = int(torch.randint(0, length + 1, (1,), generator=gen))
                row = lm_restricted(grad[min(slot, length - 1)].float().cpu().unsqueeze(0), lp[slot].unsqueeze(0),
                                    allowed, config.lm_top_k)[0]
                t = _pick(row, config.top_k, gen)
                if t is not None:
                    cands.append(torch.cat([ids[:slot], torch.tensor([t]), ids[slot:]]))
            elif u < config.p_insert + config.p_delete and length > 2:
                slot = int(torch.randint(0, length, (1,), generator=gen))
                cands.append(torch.cat([ids[:slot], ids[slot + 1:]]))
            else:
                slot = int(torch.randint(0, length, (1,), generator=gen))
                t = _pick(ranked[slot], config.top_k, gen)
                if t is not None and t != int(ids[slot]):
                    row = ids.clone()
                    row[slot] = t
                    cands.append(row)
        unique = list({tuple(c.tolist()): c for c in cands}.values())
        keep = []
        for c in unique:  # the text round trip must give the same tokens after the instruction
            if bool(retokenization_filter(tok, layout, c.unsqueeze(0), context=context)[0]):
                keep.append(c)
        if not keep:
            states.append((tuple(ids.tolist()), cur[1], cur[2]))
            continue
        total, loss, ce = score(keep)
        n_evals += len(keep)
        j = int(total.argmin())
        if float(total[j]) < cur[0]:
            ids, cur = keep[j], (float(total[j]), float(loss[j]), float(ce[j]))
        if ids.numel() >= config.min_tokens and cur[0] < best_score:
            best_ids, best_score = tuple(ids.tolist()), cur[0]
        states.append((tuple(ids.tolist()), cur[1], cur[2]))
    return FLRTResult(best_ids, best_score, tuple(states), time.perf_counter() - started, n_evals, asdict(config))
