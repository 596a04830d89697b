"""Continuous relaxation (PEZ-style, Wen et al. 2023): optimize soft prompt embeddings, project to tokens, polish.

The prompt is a matrix E (L, d) of free embeddings. Each step projects every row to its nearest allowed token
embedding (L2), runs the objective on the *projected* embeddings P, and applies the gradient to E
(straight-through: x = P + (E - E.detach())), plus a penalty `nn_weight * mean_j |E_j - P_j|^2 / d` that pulls each
row toward its token. So every forward scores a real token prompt (the projection), and the continuous E can drift
across several tokens' regions before the projection changes. The best projected prompt (by objective loss) is
then polished by a few GCG steps.

The objective must give a differentiable loss of input embeddings: `objective.loss_from_embeddings(embeds
(1, L, d)) -> scalar tensor` when it has one; for the activation-shift objective without it, `shift_loss_from_embeds`
below computes the same loss from the objective's public parts with plain early-exit forwards.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from realize.attacks import gcg
from realize.attacks.base import AttackResult, Objective, Step, filter_context, start_ids
from realize.attacks.embeddings import as_input_embeds
from realize.attacks.objectives import ActivationShiftObjective, activation_loss
from realize.attacks.sampling import allowed_token_mask, retokenization_filter
from realize.data.activations import block_outputs
from realize.data.chat import ChatLayout
from realize.data.models import LoadedModel

logger = logging.getLogger(__name__)

EmbeddingLoss = Callable[[torch.Tensor], torch.Tensor]  # embeds (1, L, d) -> scalar loss with gradient


@dataclass(frozen=True, kw_only=True)
class RelaxedConfig:
    """Settings of the continuous relaxation and its GCG polish."""

    length: int = 12  # prompt tokens (ignored when an init prompt is given)
    steps: int = 100  # relaxation steps (one forward + backward each)
    lr: float = 0.05  # Adam learning rate, in units of the mean token-embedding norm
    nn_weight: float = 1.0  # weight of the pull toward the nearest token embedding
    polish_steps: int = 10  # GCG steps from the best projected prompt (0 = none)
    polish: gcg.GCGConfig = field(default_factory=gcg.GCGConfig)  # GCG settings of the polish (steps overridden)
    ascii_only: bool = True  # allowed tokens: printable ASCII only, no special tokens
    seed: int = 0  # seed of the random initial prompt
    show_progress: bool = False  # tqdm bar over steps

    def __post_init__(self) -> None:
        for name in ("length", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr: expected a finite value > 0, got {self.lr}")
        if not (self.nn_weight >= 0 and math.isfinite(self.nn_weight)):
            raise ValueError(f"nn_weight: expected a finite value >= 0, got {self.nn_weight}")
        if self.polish_steps < 0:
            raise ValueError(f"polish_steps: expected >= 0, got {self.polish_steps}")


def project(embeds: torch.Tensor, weight: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Nearest allowed token (L2) of each row: embeds (L, d), weight (V, d), allowed (V,) bool -> ids (L,) long."""
    candidates = allowed.nonzero().squeeze(1)
    table = weight[candidates].float()
    dist = (table * table).sum(-1).unsqueeze(0) - 2 * embeds.detach().float() @ table.T  # |e|^2 is constant per row
    return candidates[dist.argmin(dim=1)]


def shift_loss_from_embeds(objective: ActivationShiftObjective) -> EmbeddingLoss:
    """The activation-shift loss as a differentiable function of the prompt's input embeddings (1, L, d).

    Same loss as `objective.losses` (its `activation_loss`, base activations and contexts), computed with one
    plain early-exit forward per context (no KV reuse: one prompt at a time, the gradient path is what counts)."""
    model, layout, layer = objective.model, objective.layout, objective.layer
    embed = model.get_input_embeddings()  # its output already carries `embed_scale`: not applied again below
    target = objective.target

    def loss(embeds: torch.Tensor) -> torch.Tensor:
        n = embeds.shape[1]
        means, cos_sum, count = [], embeds.new_zeros(()), 0
        for k, ctx in enumerate(objective.context_ids):
            placed = layout.place([0] * n, ctx)  # placeholder ids mark the prompt span
            ids = torch.tensor([placed.ids], device=embeds.device)
            parts = embed(ids)
            span = list(placed.prompt)
            full = torch.cat([parts[:, : span[0]], embeds.to(parts), parts[:, span[-1] + 1 :]], dim=1)
            hidden = block_outputs(model, [layer], inputs_embeds=full)[layer][0, list(placed.aligned)].float()
            delta = placed.zero_unreachable(hidden - objective.base[k].to(hidden))
            means.append(delta.mean(dim=0))
            cos_sum = cos_sum + F.cosine_similarity(delta, target.unsqueeze(0), dim=-1).sum()
            count += delta.shape[0]
        mean = torch.stack(means).mean(dim=0, keepdim=True)
        return activation_loss(mean, (cos_sum / count).unsqueeze(0), target, objective.generic, objective.config)[0]

    return loss


def _embedding_loss(objective: Objective) -> EmbeddingLoss:
    own = getattr(objective, "loss_from_embeddings", None)
    if callable(own):
        return own
    if isinstance(objective, ActivationShiftObjective):
        return shift_loss_from_embeds(objective)
    raise TypeError(
        f"{type(objective).__name__}: the relaxed attack needs a loss of input embeddings "
        "(a `loss_from_embeddings(embeds (1, L, d))` method)"
    )


def run(
    objective: Objective,
    lm: LoadedModel,
    layout: ChatLayout | None,
    config: RelaxedConfig,
    *,
    init: Sequence[int] | None = None,
) -> AttackResult:
    """Relax, project, polish. `init` (prompt ids) sets the starting embeddings; else a random allowed prompt."""
    started = time.perf_counter()
    model, tokenizer = lm.model, lm.tokenizer
    loss_fn = _embedding_loss(objective)
    weight = model.get_input_embeddings().weight.detach()
    allowed = allowed_token_mask(tokenizer, ascii_only=config.ascii_only, vocab_size=weight.shape[0])
    generator = torch.Generator().manual_seed(config.seed)
    start = start_ids(init)
    if start is None:
        pool = allowed.nonzero().squeeze(1)
        start = tuple(pool[torch.randint(0, pool.numel(), (config.length,), generator=generator)].tolist())
    soft = weight[torch.tensor(start)].clone().float().requires_grad_(True)
    unit = weight.float().norm(dim=-1).mean().item()
    optimizer = torch.optim.Adam([soft], lr=config.lr * unit)

    best_ids, best_loss = start, math.inf
    seen: dict[tuple[int, ...], float] = {}
    trajectory: list[Step] = []
    for step in tqdm(range(config.steps), disable=not config.show_progress, desc="relaxed"):
        step_start = time.perf_counter()
        ids = project(soft, weight, allowed)
        nearest = weight[ids].float()
        straight = nearest + (soft - soft.detach())  # forward: the tokens; backward: into the soft rows
        with torch.enable_grad():
            obj = loss_fn(as_input_embeds(model, straight).unsqueeze(0))
            pull = ((soft - nearest) ** 2).sum(dim=-1).mean() / soft.shape[1]
            total = obj + config.nn_weight * pull
            optimizer.zero_grad()
            total.backward()
        optimizer.step()
        key = tuple(int(t) for t in ids.tolist())
        seen[key] = min(float(obj.item()), seen.get(key, math.inf))
        if seen[key] < best_loss:
            best_loss, best_ids = seen[key], key
        trajectory.append(Step(
            step=step, loss=float(obj.item()), best_loss=best_loss, prompt_ids=key, prompt=tokenizer.decode(key),
            seconds=time.perf_counter() - step_start, n_candidates=1, metrics={"pull": float(pull.item())},
        ))
    # the best projected prompt that survives the in-context retokenization check
    ranked = sorted(seen, key=seen.__getitem__)
    top = torch.tensor(ranked[:64])
    survivors = top[retokenization_filter(tokenizer, layout, top, context=filter_context(objective))]
    if survivors.shape[0] > 0:
        best_ids = tuple(int(t) for t in survivors[0].tolist())
        best_loss = seen[best_ids]
    n_evaluations = config.steps
    if config.polish_steps > 0:
        polish = gcg.run(objective, lm, layout, replace(config.polish, steps=config.polish_steps), init=best_ids)
        n_evaluations += polish.n_evaluations
        offset = len(trajectory)
        trajectory.extend(replace(s, step=s.step + offset) for s in polish.trajectory)
        if polish.best_loss < best_loss:
            best_ids, best_loss = polish.best_ids, polish.best_loss
    return AttackResult(
        attack="relaxed",
        best_ids=best_ids,
        best_prompt=tokenizer.decode(list(best_ids)),
        best_loss=best_loss,
        trajectory=tuple(trajectory),
        seconds=time.perf_counter() - started,
        n_evaluations=n_evaluations,
        config=asdict(config),
    )
