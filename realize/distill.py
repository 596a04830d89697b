"""Prompt-distilled steering vectors: behavior positives for which a prompt exists by construction.

For a natural prompt p and blocks `layers`, train one v_i (d,) per layer, jointly, so that the base model steered by
every v_i at its layer i, with no prompt, reproduces the prompted model's next-token distributions along the prompted
model's own continuations (a multi-layer steer's behavior positive steers the same layers as the steer):

    z_k = greedy(prompted model, place(p, c_k)), T tokens       Q_k,t = log P(. | place(p, c_k), z_k,<t)  (fixed)
    loss(v) = 1/N sum_k sum_t KL( Q_k,t || log P_v(. | x_k, z_k,<t) )     x_k = the base input of c_k, v = {i: v_i}

with Adam from v = 0. Measured on SmolLM2 (layer 6, 8 contexts x 24 tokens): 150 steps at lr 0.05 take the loss from
0.74 to 0.07 nats per token, and the steered model then writes in the prompt's manner on contexts it never saw.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from realize.data.activations import check_layer, steer
from realize.data.chat import ChatLayout, encode
from realize.data.models import LoadedModel, pad_id
from realize.data.steered import forced_logprobs, greedy_batch
from realize.data.vectors import SteeringVector

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    steps: int = 150  # Adam steps
    lr: float = 0.05  # Adam learning rate
    tokens: int = 24  # T: prompted continuation length per context
    seed: int = 0  # nothing is random today (greedy continuations, v starts at 0); kept for the item key
    show_progress: bool = False  # tqdm bar

    def __post_init__(self) -> None:
        for name in ("steps", "tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")


@dataclass(frozen=True)
class DistillResult:
    vector: SteeringVector
    losses: tuple[float, ...]  # per step: mean KL(prompted || steered) per token


def _batch(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(list(r))
        mask[b, : len(r)] = 1
    return ids, mask


def train_distilled(lm: LoadedModel, layout: ChatLayout, prompt: str, layers: int | Sequence[int],
                    contexts: Sequence[str], config: DistillConfig = DistillConfig()) -> DistillResult:
    """A steer at `layers` (one layer, or several trained jointly) that makes the unprompted model behave as if
    `prompt` were in the turn (see module)."""
    layers = (layers,) if isinstance(layers, int) else tuple(sorted(set(layers)))
    if not layers:
        raise ValueError("layers: expected at least one layer")
    for layer in layers:
        check_layer(lm.model, layer, "layer")
    if not contexts:
        raise ValueError("contexts: expected at least one context")
    tok = lm.tokenizer
    prompt_ids = encode(tok, prompt)
    if not prompt_ids:
        raise ValueError("prompt: expected text that encodes to at least one token")
    context_ids = [encode(tok, c) for c in contexts]
    prompted_in = [layout.place(prompt_ids, c).ids for c in context_ids]
    base_in = [layout.place(None, c).ids for c in context_ids]
    zs = [z or [tok.eos_token_id or 0] for z in greedy_batch(lm, prompted_in, config.tokens)]
    targets = forced_logprobs(lm, prompted_in, zs)  # Q_k: (|z_k|, V)
    ids, mask = _batch([list(x) + list(z) for x, z in zip(base_in, zs, strict=True)], pad_id(tok))
    positions = [(b, len(x) - 1 + t) for b, (x, z) in enumerate(zip(base_in, zs, strict=True)) for t in range(len(z))]
    rows, cols = torch.tensor([p[0] for p in positions]), torch.tensor([p[1] for p in positions])
    target = torch.cat(targets)  # (N, V)
    vectors = {layer: torch.zeros(lm.hidden_size, requires_grad=True) for layer in layers}
    optimizer = torch.optim.Adam(list(vectors.values()), lr=config.lr)
    losses = []
    for _ in tqdm(range(config.steps), desc="distill", disable=not config.show_progress):
        optimizer.zero_grad()
        with torch.enable_grad(), steer(lm.model, vectors, 1.0):
            logits = lm.model(input_ids=ids, attention_mask=mask).logits[rows, cols].float()
            logp = torch.log_softmax(logits, dim=-1)
            loss = (target.exp() * (target - logp)).sum(-1).mean()
            loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    tag = ",".join(map(str, layers))
    logger.info("distilled %r at layer(s) %s: KL %.3f -> %.3f nats/token, |v| = %.2f", prompt, tag, losses[0],
                losses[-1], float(torch.cat([v.detach() for v in vectors.values()]).norm()))
    result = SteeringVector(directions={i: v.detach().clone() for i, v in vectors.items()}, scale=1.0,
                            method="distill", name=f"distill.L{tag}", notes=prompt)
    return DistillResult(result, tuple(losses))
