"""Natural GCG: gradient-guided token search with fluency inside the search, from a natural start. Its moves keep
every word whole, and a fluency budget decides what is scored at all, so the prompt stays readable at high fidelity.

Public API (stable):

    NaturalConfig(*, steps=40, width=48, top_k=48, lm_top_k=64, lm_share=0.75, p_insert=0.15, p_delete=0.15,
                  p_double=0.25, max_ce=6.0, max_surprisal=16.0, fluency_weight=0.05, max_tokens=32,
                  probe_contexts=0, probe_keep=0.5, max_frontier=12, frontier_metrics=True, ascii_only=True, seed=0,
                  init_beam=BeamConfig(), content_share=0.0, content_words=30000, content_top_k=12, content_span=3,
                  content_connector=0.5, content_draws=4, show_progress=False)
    run(objective, lm, layout, config, *, init=None) -> AttackResult   # init: start prompt ids (else the beam's);
    the content moves' words come from `content.lexicon_for` (when content_share > 0)
    word_moves(ids (L,), spans, grad (L, V), next_logprobs (L + 1, V), masks, config, generator, n) -> list[(L',)]

Each step (the loop reads like the algorithm):
  1. gradient of the objective w.r.t. the one-hot current prompt, and the LM's next-token distribution at every
     prompt position (the prompt read after the chat template's head, as a user writes it; `attacks.fluency`);
     both are reused while the current prompt does not change;
  2. candidates, each one or two word-level moves on the prompt's words (`sampling.word_spans`): replace a whole
     word by one whole-word token (`sampling.word_token_masks`), insert a whole-word token between two words, or
     delete a word (never the first: the chat turn starts with it). The new token comes from the objective's
     gradient top-k among whole-word tokens, or (share `lm_share`) from the LM's own top-k at that slot re-ranked
     by the gradient: what the LM would write there, the objective's favourites first. No move can split a word
     or glue a token onto one, so the non-words of token-level GCG ("withtained", digits glued to words) cannot
     appear. Content moves (share `content_share`, objectives with `content_scores`; `attacks.content`): a word
     of a lexicon, drawn from the `content_top_k` the objective ranks as the content the current prompt still
     lacks, in its singular or plural form, replaces a span of 0..`content_span` words, sometimes after an
     LM-chosen connector ("about"): what the local edits cannot reach, the template's content. The rank is
     recomputed when the prompt changes. Content moves are drawn `content_draws` times over and the LM fills the
     slot: of those within the fluency budget (step 4), only the `content_share * width` lowest-CE are scored;
  3. filter: in-context retokenization round trip; nothing evaluated before;
  4. fluency budget, before any objective forward (it is ~6x cheaper than the objective on 8 contexts): the
     surprisal of every candidate token under the LM; a candidate whose mean surprisal (CE) exceeds the budget's
     CE or whose worst token exceeds its worst-token surprisal is dropped. The budget is `max_ce` /
     `max_surprisal` (defaults: about the 85th / 95th percentiles of the shipped natural prompts, SmolLM2, chat
     position; tighter budgets left ~5 of 48 proposals per step in budget and stalled), raised to the start
     prompt's own values when a natural start is above them;
  5. probe sampling (`probe_contexts` > 0 and an objective with `restricted`): the survivors are first scored on
     that many of the objective's contexts and only the best `probe_keep` share is scored on all of them;
  6. batched objective loss; score = loss + fluency_weight * CE; the prompt moves to the step's best candidate
     when that lowers its score (greedy), else it stays and the next step samples other moves.
Every fully scored candidate within budget is archived; the result's frontier is the archive's Pareto set over
(objective loss, CE) (`max_frontier` points, with the objective's metrics), and its best is the lowest score.
All randomness comes from one torch.Generator seeded with `seed`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from realize.attacks.base import AttackResult, FrontierPoint, Objective, Step, filter_context
from realize.attacks.beam import BeamConfig, start_or_beam
from realize.attacks.content import Connectors, ContentLexicon, content_moves, lexicon_for, most_fluent
from realize.attacks.fluency import HeadState, encode_head, lm_head_ids, next_token_logprobs, prompt_surprisal
from realize.attacks.fluent import pareto_front
from realize.attacks.sampling import (
    allowed_token_mask, retokenization_filter, token_strings, word_spans, word_token_masks,
)
from realize.data.chat import ChatLayout
from realize.data.models import LoadedModel

logger = logging.getLogger(__name__)

__all__ = ["NaturalConfig", "run", "word_moves"]


@dataclass(frozen=True, kw_only=True)
class NaturalConfig:
    """Settings of natural GCG."""

    steps: int = 40  # search steps
    width: int = 48  # candidates proposed per step (before the filters and the fluency budget)
    top_k: int = 48  # objective-gradient top-k whole-word tokens per slot
    lm_top_k: int = 64  # the LM's top-k next tokens per slot, re-ranked by the gradient
    lm_share: float = 0.75  # share of new tokens from the LM's proposals (most gradient-only words break the budget)
    p_insert: float = 0.15  # share of moves that insert a word
    p_delete: float = 0.15  # share of moves that delete a word (as many as insertions: no drift to long prompts)
    p_double: float = 0.25  # share of candidates that make two moves instead of one
    max_ce: float = 6.0  # fluency budget: mean surprisal of the prompt's tokens under the LM, nats (or the start's)
    max_surprisal: float = 16.0  # fluency budget: surprisal of the worst token, nats (or the start's)
    fluency_weight: float = 0.05  # score = objective loss + this * CE (keeps the walk off the budget's edge)
    max_tokens: int = 32  # longest prompt an insertion may produce
    probe_contexts: int = 0  # probe sampling: rank candidates on this many contexts first (0 = off)
    probe_keep: float = 0.5  # probe sampling: share of candidates scored on all contexts
    max_frontier: int = 12  # frontier points returned (with the objective's metrics)
    frontier_metrics: bool = True  # the objective's metrics per frontier point (one forward each; off: cos None)
    ascii_only: bool = True  # allowed tokens: printable ASCII only, no special tokens
    seed: int = 0  # seeds every random draw (and the beam initializer)
    init_beam: BeamConfig = field(default_factory=BeamConfig)  # start when no init prompt is given
    content_share: float = 0.0  # share of candidates that are content moves (0 = none: the search without them)
    content_words: int = 30000  # default lexicon: wordfreq's top this many English words (~24k after filtering)
    content_top_k: int = 12  # content moves draw from the lexicon's top-k words for the current prompt
    content_span: int = 3  # longest span of words a content move replaces (0 = it inserts)
    content_connector: float = 0.5  # share of content moves that put a connector ("about a") first
    content_draws: int = 4  # content moves drawn per content candidate; the lowest-CE ones within budget are scored
    show_progress: bool = False  # tqdm bar

    def __post_init__(self) -> None:
        for name in ("steps", "width", "top_k", "lm_top_k", "max_tokens", "max_frontier", "content_words",
                     "content_top_k", "content_draws"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        for name in ("probe_contexts", "seed", "content_span"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
        for name in ("lm_share", "p_insert", "p_delete", "p_double", "content_share", "content_connector"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name}: expected a probability in [0, 1], got {value!r}")
        if self.p_insert + self.p_delete > 1.0:
            raise ValueError(f"p_insert + p_delete: expected <= 1, got {self.p_insert + self.p_delete}")
        if not 0.0 < self.probe_keep <= 1.0:
            raise ValueError(f"probe_keep: expected in (0, 1], got {self.probe_keep!r}")
        for name in ("max_ce", "max_surprisal", "fluency_weight"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class _Masks:
    first: torch.Tensor  # (V,) whole-word tokens allowed at position 0
    inner: torch.Tensor  # (V,) whole-word tokens allowed after it


def _pick(scores: torch.Tensor, allowed: torch.Tensor, k: int, generator: torch.Generator) -> int | None:
    """A token drawn uniformly from the `k` lowest `scores` (V,) among `allowed` (V,) (None if none is)."""
    n = min(k, int(allowed.sum()))
    if n < 1:
        return None
    top = scores.masked_fill(~allowed, float("inf")).topk(n, largest=False).indices
    return int(top[torch.randint(0, n, (1,), generator=generator)])


def _new_token(slot: int, grad: torch.Tensor, next_logprobs: torch.Tensor, masks: _Masks, config: NaturalConfig,
               generator: torch.Generator) -> int | None:
    """A whole-word token for position `slot` (0 = the prompt's first): from the gradient's top-k, or from the
    LM's top-k there re-ranked by the gradient."""
    allowed = masks.first if slot == 0 else masks.inner
    g = grad[min(slot, grad.shape[0] - 1)]
    if torch.rand(1, generator=generator).item() < config.lm_share:
        lm = next_logprobs[slot].masked_fill(~allowed, float("-inf"))
        n = min(config.lm_top_k, int(allowed.sum()))
        if n >= 1:
            proposed = torch.zeros_like(allowed)
            proposed[lm.topk(n).indices] = True
            return _pick(g, proposed & allowed, config.top_k, generator)
    return _pick(g, allowed, config.top_k, generator)


def _move(ids: list[int], spans: Sequence[tuple[int, int]], word: int, kind: str, grad: torch.Tensor,
          next_logprobs: torch.Tensor, masks: _Masks, config: NaturalConfig,
          generator: torch.Generator) -> list[int] | None:
    """One move at word index `word` of the original prompt: "delete" it, "insert" a token before it (`word` ==
    len(spans): at the end), or "swap" it for one token. Positions before the word are unchanged, so the
    gradient and LM rows of the original prompt are exact for its slot."""
    if kind == "delete":
        a, b = spans[word]
        return ids[:a] + ids[b:]
    slot = spans[word][0] if word < len(spans) else len(ids)
    token = _new_token(slot, grad, next_logprobs, masks, config, generator)
    if token is None:
        return None
    end = slot if kind == "insert" else spans[word][1]
    return ids[:slot] + [token] + ids[end:]


def _draw_move(n_words: int, length: int, config: NaturalConfig, generator: torch.Generator) -> tuple[str, int]:
    """(kind, word index): delete/insert never touch the first word (the turn starts with it)."""
    u = torch.rand(1, generator=generator).item()
    if u < config.p_delete and n_words > 1:
        return "delete", int(torch.randint(1, n_words, (1,), generator=generator))
    if u < config.p_delete + config.p_insert and length < config.max_tokens:
        return "insert", int(torch.randint(1, n_words + 1, (1,), generator=generator))
    return "swap", int(torch.randint(0, n_words, (1,), generator=generator))


def word_moves(ids: torch.Tensor, spans: Sequence[tuple[int, int]], grad: torch.Tensor, next_logprobs: torch.Tensor,
               masks: _Masks, config: NaturalConfig, generator: torch.Generator, n: int) -> list[torch.Tensor]:
    """`n` candidates (each (L',) long; lengths vary), each one word-level move on `ids` (L,), or two at distinct
    words with probability `p_double` (applied from the right, so every move's slot and its gradient / LM rows are
    those of the original prompt). spans: the prompt's words (`sampling.word_spans`); grad (L, V);
    next_logprobs (L + 1, V), row j = log P(. | head, p_<j). Moves that find no allowed token are skipped."""
    base = ids.tolist()
    out = []
    for _ in range(n):
        moves = [_draw_move(len(spans), len(base), config, generator)]
        if torch.rand(1, generator=generator).item() < config.p_double:
            second = _draw_move(len(spans), len(base) + 1, config, generator)
            if second[1] != moves[0][1]:
                moves.append(second)
        cand: list[int] | None = base
        for kind, word in sorted(moves, key=lambda m: -m[1]):
            cand = _move(cand, spans, word, kind, grad, next_logprobs, masks, config, generator)
            if cand is None:
                break
        if cand and cand != base and len(cand) <= config.max_tokens:
            out.append(torch.tensor(cand, dtype=torch.long))
    return out


def _by_length(rows: Sequence[torch.Tensor]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(int(row.shape[0]), []).append(i)
    return groups


def _surprisal_stats(model: torch.nn.Module, head: HeadState,
                     rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE (B,), worst-token surprisal (B,)) of prompts of any lengths."""
    ce, worst = torch.zeros(len(rows)), torch.zeros(len(rows))
    for _, idx in _by_length(rows).items():
        s = prompt_surprisal(model, head, torch.stack([rows[i] for i in idx]))
        ce[idx], worst[idx] = s.mean(dim=1), s.max(dim=1).values
    return ce, worst


def _losses(objective: Objective, rows: Sequence[torch.Tensor]) -> torch.Tensor:
    out = torch.zeros(len(rows))
    for _, idx in _by_length(rows).items():
        out[idx] = objective.losses(torch.stack([rows[i] for i in idx])).float().cpu()
    return out


def _excess(ce: torch.Tensor, worst: torch.Tensor, budget: tuple[float, float]) -> torch.Tensor:
    """How far over the fluency budget (max CE, max worst-token surprisal) (0 = within it), in nats."""
    return (ce - budget[0]).clamp_min(0) + (worst - budget[1]).clamp_min(0)


def _content_top(objective: Objective, prompt: torch.Tensor, lexicon: ContentLexicon | None,
                 config: NaturalConfig) -> torch.Tensor:
    """(k,) lexicon indices of the `content_top_k` words the objective most wants in `prompt`, best first (none
    when it cannot rank this lexicon)."""
    scores = None if lexicon is None else objective.content_scores(prompt, lexicon)  # type: ignore[attr-defined]
    if scores is None:
        return torch.zeros(0, dtype=torch.long)
    return scores.float().topk(min(config.content_top_k, scores.numel())).indices


def _draft(objective: Objective, config: NaturalConfig) -> Objective | None:
    restricted = getattr(objective, "restricted", None)
    n = len(getattr(objective, "context_ids", ()))
    if config.probe_contexts < 1 or restricted is None or config.probe_contexts >= n:
        return None
    return restricted(range(config.probe_contexts))


def run(
    objective: Objective,
    lm: LoadedModel,
    layout: ChatLayout,
    config: NaturalConfig,
    *,
    init: Sequence[int] | None = None,
) -> AttackResult:
    """Natural GCG on `objective` (see module docstring) from `init` (token ids) or the beam search's prompt;
    content moves draw from `content.lexicon_for` (built once per model and layers)."""
    started = time.perf_counter()
    model, tokenizer = lm.model, lm.tokenizer
    context = filter_context(objective)
    gen = torch.Generator().manual_seed(config.seed)
    start, n_evals = start_or_beam(objective, lm, layout, config.init_beam, init)
    head = encode_head(model, lm_head_ids(layout))
    vocab = int(model.get_input_embeddings().weight.shape[0])
    strings = token_strings(tokenizer, vocab)
    allowed = allowed_token_mask(tokenizer, ascii_only=config.ascii_only, vocab_size=vocab)
    first_mask, inner_mask = word_token_masks(strings)
    masks = _Masks(first_mask & allowed, inner_mask & allowed)
    draft = _draft(objective, config)
    n_content = round(config.content_share * config.width) if hasattr(objective, "content_scores") else 0
    lexicon = lexicon_for(objective, lm, layout, config.content_words) if n_content else None
    connectors = Connectors.of(tokenizer, strings) if n_content else None

    current = torch.tensor(list(start), dtype=torch.long)
    ce0, worst0 = _surprisal_stats(model, head, [current])
    loss0 = _losses(objective, [current])
    n_evals += 1
    budget = (max(config.max_ce, float(ce0[0])), max(config.max_surprisal, float(worst0[0])))
    cur_loss, cur_ce = float(loss0[0]), float(ce0[0])
    archive = [(tuple(current.tolist()), cur_loss, cur_ce)]  # (ids, loss, ce): every scored prompt (all in budget)
    seen = {tuple(current.tolist())}
    grad_for: tuple[int, ...] | None = None
    trajectory: list[Step] = []
    n_screened = 0
    bar = tqdm(range(config.steps), disable=not config.show_progress, desc="natural", dynamic_ncols=True)
    for step in bar:
        t0 = time.perf_counter()
        key = tuple(current.tolist())
        if key != grad_for:  # gradient and LM rows are reused while the prompt does not change
            grad = objective.loss_and_grad(current)[1].float().cpu()
            with torch.no_grad():
                next_lp = next_token_logprobs(model, head, current.unsqueeze(0))[0].float().cpu()
            spans = word_spans([strings[t] for t in key])
            top = _content_top(objective, current, lexicon, config) if n_content else torch.zeros(0, dtype=torch.long)
            grad_for = key
        proposals = word_moves(current, spans, grad, next_lp, masks, config, gen, config.width - n_content)
        content_keys: set[tuple[int, ...]] = set()
        if n_content:  # drawn `content_draws` times over; the LM keeps the most fluent (step 4)
            drawn = content_moves(current, spans, lexicon, top, connectors, next_lp,  # type: ignore[arg-type]
                                  max_span=config.content_span, p_connector=config.content_connector,
                                  max_tokens=config.max_tokens, generator=gen, n=n_content * config.content_draws)
            content_keys = {tuple(r.tolist()) for r in drawn}
            proposals += drawn
        fresh, keys = [], set()
        for row in proposals:
            k = tuple(row.tolist())
            if k not in seen and k not in keys:
                keys.add(k)
                fresh.append(row)
        kept = []
        for _, idx in _by_length(fresh).items():
            group = torch.stack([fresh[i] for i in idx])
            ok = retokenization_filter(tokenizer, layout, group, context=context)
            kept.extend(fresh[i] for i, good in zip(idx, ok.tolist(), strict=True) if good)
        seen.update(tuple(r.tolist()) for r in kept)
        n_scored = 0
        step_best = math.inf
        if kept:
            ce, worst = _surprisal_stats(model, head, kept)
            ok = _excess(ce, worst, budget) <= 0
            if content_keys:
                is_content = torch.tensor([tuple(r.tolist()) in content_keys for r in kept])
                capped = most_fluent(ce, ok, is_content, n_content)
                seen.difference_update(tuple(kept[i].tolist()) for i in (ok & ~capped).nonzero().flatten().tolist())
                ok = capped
            pool, ce = [kept[i] for i in ok.nonzero().flatten().tolist()], ce[ok]
            if pool and draft is not None and len(pool) > 2:
                n_screened += len(pool)
                rough = _losses(draft, pool) + config.fluency_weight * ce
                keep = rough.argsort()[: max(1, math.ceil(config.probe_keep * len(pool)))]
                pool, ce = [pool[i] for i in keep.tolist()], ce[keep]
            if pool:
                loss = _losses(objective, pool)
                n_scored = len(pool)
                n_evals += n_scored
                archive.extend((tuple(r.tolist()), lo, c) for r, lo, c in zip(pool, loss.tolist(), ce.tolist(),
                                                                               strict=True))
                score = loss + config.fluency_weight * ce
                j = int(score.argmin())
                step_best = float(loss[j])
                if float(score[j]) < cur_loss + config.fluency_weight * cur_ce:
                    current, cur_loss, cur_ce = pool[j], float(loss[j]), float(ce[j])
        best_loss = min(a[1] for a in archive)
        text = tokenizer.decode(current.tolist(), clean_up_tokenization_spaces=False)
        trajectory.append(Step(step=step, loss=step_best, best_loss=best_loss, prompt_ids=tuple(current.tolist()),
                               prompt=text, seconds=time.perf_counter() - t0, n_candidates=n_scored,
                               metrics={"ce": cur_ce, "n_proposed": float(len(proposals)),
                                        "n_new": float(len(kept))}))
        bar.set_postfix(loss=f"{cur_loss:.4f}", ce=f"{cur_ce:.2f}", prompt=repr(text[:40]))
    frontier = _frontier(objective, tokenizer, archive, config)
    ids, loss, _ = min(archive, key=lambda a: a[1] + config.fluency_weight * a[2])
    cfg = asdict(config)
    cfg["n_screened"] = n_screened
    cfg["fluency_budget"] = {"max_ce": budget[0], "max_surprisal": budget[1]}
    cfg["n_content_moves"] = n_content
    return AttackResult(
        attack="natural", best_ids=ids, best_prompt=tokenizer.decode(list(ids), clean_up_tokenization_spaces=False),
        best_loss=loss, trajectory=tuple(trajectory), seconds=time.perf_counter() - started, n_evaluations=n_evals,
        config=cfg, frontier=frontier,
    )


def _frontier(objective: Objective, tokenizer: object, archive: Sequence[tuple[tuple[int, ...], float, float]],
              config: NaturalConfig) -> tuple[FrontierPoint, ...]:
    """The archive's Pareto set over (loss, CE), at most `max_frontier` points spread over CE, lowest loss first;
    each with the objective's metrics (`frontier_metrics`; else cos and specific_cos are None)."""
    unique = {ids: (loss, ce) for ids, loss, ce in archive}
    keys = list(unique)
    costs = torch.tensor([unique[k] for k in keys], dtype=torch.float64)
    front = pareto_front(costs)
    if front.numel() > config.max_frontier:
        front = front[torch.linspace(0, front.numel() - 1, config.max_frontier).round().long().unique()]
    points = []
    for i in front.tolist():
        ids = keys[i]
        loss, ce = unique[ids]
        metrics = dict(objective.metrics(torch.tensor(ids))) if config.frontier_metrics else {}
        spec = metrics.get("specific_cos")
        cos = float(metrics.get("cos", -loss)) if config.frontier_metrics else None
        points.append(FrontierPoint(
            prompt=tokenizer.decode(list(ids)), ids=ids, loss=loss, cos=cos,  # type: ignore[attr-defined]
            specific_cos=None if spec is None else float(spec), ce=ce, perplexity=math.exp(ce),
            fluency_weight=config.fluency_weight,
        ))
    return tuple(points)
