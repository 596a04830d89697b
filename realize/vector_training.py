"""Train steering vectors to audit: MELBO (unsupervised) and CAA (contrastive mean difference).

MELBO (Mack & Turner 2024): learn n orthogonal vectors of norm R, added at a source block's output, that maximize
the change of a later block's output over a few prompts: maximize `(sum_{prompts, positions} |Z_t(v) - Z_t(0)|^p)^(1/q)`.
Vectors are trained one after another, each kept orthogonal to the earlier ones and rescaled to norm R after every
step. Their defaults: source layer 7, target n_layers - 8, AdamW lr 1e-3, p = q = 2, 300 steps.

CAA / contrastive mean difference: v = mean over pairs of (h_i(positive) - h_i(negative)) at block i, averaged over
the last `positions` tokens (the end of the user turn and the assistant header, where the answer is decided).

Defaults deviate from the paper where SmolLM2-135M needs it (see MelboConfig); all are flags of `train-vectors`.
The radius is calibrated per model by default, and the learning rate follows it. Residual norms do not transfer
across architectures (layer 7, median over tokens: ~117 on SmolLM2-135M; ~5,500 on Gemma-3-270M, where one
dimension that every token shares carries ~5,100 of it; even the spread around the mean differs 12x, 81 vs ~1,000),
and neither does a fraction of them: R = 0.41 x the norm steers SmolLM2 visibly and turns Gemma's generations into
digits. What transfers is the effect on the output: random directions at the R where SmolLM2's MELBO vectors work
(48) move its next-token distributions by ~1.3 nats, and so they do on Gemma at R = 250, where its MELBO vectors
change generations visibly while keeping them English. So R defaults to the norm at which random directions reach
that KL (`calibrate_radius`).

Prompts are placed as a chat user turn, or in `data.chat`'s plain layout for a model without a chat template.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from realize.data.activations import block_output, block_outputs, check_layer, steer
from realize.data.generation import chat_ids
from realize.data.models import LoadedModel
from realize.data.shift import pad_right
from realize.data.vectors import SteeringVector

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class MelboConfig:
    source_layer: int = 7  # block whose output gets the vector
    target_layer: int | None = None  # block whose change is maximized; None = n_layers - 8
    n_vectors: int = 4  # orthogonal vectors to learn
    radius: float | None = None  # norm R; None = calibrated (`calibrate_radius`): the R at which random directions
    # at source_layer move the prompts' next-token distributions by calibration_kl nats
    calibration_kl: float = 1.3  # nats; SmolLM2-135M: R ~ 47 at layer 7 (R=16 barely changes its generations,
    # R=48 changes them visibly); Gemma-3-270M: R ~ 250 (R=500 turns them into digits and fragments)
    steps: int = 100  # optimizer steps per vector (paper: 300; ~0.35 s each on 2 cores for 4 prompts)
    lr: float | None = None  # AdamW learning rate; None = R x 1e-4 (5e-3 at R = 48; paper: 1e-3 at a smaller R.
    # Adam steps are ~lr per coordinate, so the rate follows R to move the direction as far)
    power: float = 2.0  # p: exponent on each position's change norm
    q: float | None = None  # outer root; None = p
    seed: int = 0  # initialization seed
    show_progress: bool = True  # tqdm bar per vector

    def __post_init__(self) -> None:
        if self.source_layer < 0:
            raise ValueError(f"source_layer: expected >= 0, got {self.source_layer}")
        if self.target_layer is not None and self.target_layer <= self.source_layer:
            raise ValueError(f"target_layer: expected > source_layer ({self.source_layer}), got {self.target_layer}")
        for name in ("n_vectors", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("radius", "lr", "calibration_kl", "power"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}: expected > 0, got {value}")
        if self.q is not None and not self.q > 0:
            raise ValueError(f"q: expected > 0, got {self.q}")


def _batch(lm: LoadedModel, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    if not prompts:
        raise ValueError("prompts: expected at least one prompt")
    return pad_right([chat_ids(lm, p) for p in prompts], lm.tokenizer.pad_token_id or 0)


def _orthogonalize(v: torch.Tensor, basis: Sequence[torch.Tensor], radius: float) -> torch.Tensor:
    for b in basis:
        v = v - (v @ b) / (b @ b) * b
    return v / v.norm().clamp_min(1e-12) * radius


@torch.no_grad()
def _random_direction_kl(lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, base: torch.Tensor, layer: int,
                         directions: Sequence[torch.Tensor], radius: float) -> float:
    """Mean over `directions` (unit (d,)) and the real positions of KL(steered || base) of next-token distributions
    (`base`: the unsteered log-probs at the real positions, (N, V)), the steer adding `radius * direction` at block
    `layer`."""
    valid = mask.bool()
    kls = []
    for unit in directions:
        with steer(lm.model, {layer: unit * radius}, 1.0):
            steered = torch.log_softmax(lm.model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)[valid]
        kls.append((steered.exp() * (steered - base)).sum(dim=-1).mean())
    return float(torch.stack(kls).mean())


def calibrate_radius(lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, layer: int, target_kl: float, *,
                     n_directions: int = 4, iterations: int = 6) -> float:
    """The norm R at which random directions added at block `layer` move the next-token distributions of the
    (right-padded) inputs by `target_kl` nats on average: a unit of steering strength that transfers across
    architectures where residual norms do not (see MelboConfig). KL grows about as R^2 at these sizes, so R is
    found by the secant rule in log-log space from a start at 5 % of the median residual norm (a few iterations),
    capped at twice that norm (a model whose outputs saturate below `target_kl` gets the cap, with a warning)."""
    with torch.no_grad():
        hidden = block_output(lm.model, layer, ids, mask)[mask.bool()]
        base = torch.log_softmax(lm.model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)[mask.bool()]
    generator = torch.Generator().manual_seed(0)  # fixed: R must not depend on the training seed
    directions = [torch.randn(lm.hidden_size, generator=generator) for _ in range(n_directions)]
    directions = [d / d.norm() for d in directions]
    norm = float(hidden.norm(dim=-1).median())
    radius, cap = 0.05 * norm, 2.0 * norm  # beyond twice the residual norm a steer replaces the stream
    previous: tuple[float, float] | None = None
    kl = 0.0
    for _ in range(iterations):
        kl = max(_random_direction_kl(lm, ids, mask, base, layer, directions, radius), 1e-9)
        logger.debug("calibrate_radius: R = %.4g -> KL %.3g", radius, kl)
        if abs(math.log(kl / target_kl)) < 0.05 or (radius >= cap and kl < target_kl):
            break
        slope = 2.0
        if previous is not None and previous[0] != radius and previous[1] != kl:
            slope = min(max(math.log(kl / previous[1]) / math.log(radius / previous[0]), 0.5), 4.0)
        previous = (radius, kl)
        radius = min(radius * (target_kl / kl) ** (1.0 / slope), cap)
    if abs(math.log(kl / target_kl)) > math.log(1.5):
        logger.warning("MELBO radius: random directions at layer %d move next-token distributions by %.3g nats at "
                       "R = %.4g, not %.3g; using that R (pass an explicit radius to choose)", layer, kl, radius,
                       target_kl)
    return radius


def melbo_radius_and_lr(lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, config: MelboConfig) -> tuple[float, float]:
    """(R, lr) for `config`: the given values, or the calibrated defaults (see MelboConfig)."""
    radius = config.radius
    if radius is None:
        radius = calibrate_radius(lm, ids, mask, config.source_layer, config.calibration_kl)
    return radius, config.lr if config.lr is not None else radius * 1e-4


def train_melbo(lm: LoadedModel, prompts: Sequence[str], config: MelboConfig) -> list[SteeringVector]:
    """Learn `config.n_vectors` MELBO vectors at `config.source_layer` on chat-formatted `prompts`."""
    model = lm.model
    target = config.target_layer if config.target_layer is not None else lm.num_layers - 8
    check_layer(model, config.source_layer, "source_layer")
    check_layer(model, target, "target_layer")
    if target <= config.source_layer:
        raise ValueError(f"target_layer: expected > source_layer ({config.source_layer}), got {target}")
    ids, mask = _batch(lm, prompts)
    radius, lr = melbo_radius_and_lr(lm, ids, mask, config)
    logger.info("melbo: R = %.1f, lr = %.2g at layer %d", radius, lr, config.source_layer)
    valid = mask.bool().unsqueeze(-1)  # (B, T, 1)
    q = config.q or config.power
    with torch.no_grad():
        unsteered = block_output(model, target, ids, mask)  # (B, T, d)
    generator = torch.Generator().manual_seed(config.seed)
    learned: list[torch.Tensor] = []
    for k in range(config.n_vectors):
        init = torch.randn(lm.hidden_size, generator=generator)
        theta = _orthogonalize(init, learned, radius).requires_grad_(True)
        optimizer = torch.optim.AdamW([theta], lr=lr)
        bar = tqdm(range(config.steps), desc=f"melbo vector {k}", disable=not config.show_progress, leave=False)
        for _ in bar:
            optimizer.zero_grad(set_to_none=True)
            with steer(model, {config.source_layer: theta}, 1.0):
                steered = block_outputs(model, [target], input_ids=ids, attention_mask=mask)[target]
            change = ((steered - unsteered) * valid).norm(dim=-1)  # (B, T)
            objective = change.pow(config.power).sum().pow(1.0 / q)
            (-objective).backward()
            optimizer.step()
            with torch.no_grad():
                theta.copy_(_orthogonalize(theta.detach(), learned, radius))
            bar.set_postfix(objective=f"{objective.item():.1f}")
        learned.append(theta.detach().clone())
        logger.info("melbo vector %d: objective %.2f", k, objective.item())
    return [
        SteeringVector(
            directions={config.source_layer: v},
            scale=1.0,
            model_hint=lm.name,
            method="melbo",
            name=f"melbo.{k}",
            notes=(
                f"MELBO R={radius:.4g} source={config.source_layer} target={target} steps={config.steps} "
                f"lr={lr:.3g} p={config.power} q={q} seed={config.seed} prompts={len(prompts)}"
            ),
        )
        for k, v in enumerate(learned)
    ]


@dataclass(frozen=True, kw_only=True)
class CaaConfig:
    layer: int = 12  # block whose output is contrasted
    positions: int = 4  # average over this many final tokens (end of user turn + assistant header)
    scale: float = 1.0  # scale stored with the vector
    show_progress: bool = True  # tqdm bar over pairs

    def __post_init__(self) -> None:
        if self.layer < 0:
            raise ValueError(f"layer: expected >= 0, got {self.layer}")
        if self.positions < 1:
            raise ValueError(f"positions: expected >= 1, got {self.positions}")
        if self.scale == 0:
            raise ValueError("scale: expected a non-zero coefficient")


@torch.no_grad()
def train_caa(lm: LoadedModel, pairs: Sequence[tuple[str, str]], config: CaaConfig, name: str = "caa") -> SteeringVector:
    """Contrastive mean difference of block `config.layer` outputs over (positive, negative) user messages."""
    check_layer(lm.model, config.layer)
    if not pairs:
        raise ValueError("pairs: expected at least one (positive, negative) pair")
    diffs = []
    for positive, negative in tqdm(pairs, desc="caa pairs", disable=not config.show_progress, leave=False):
        means = []
        for text in (positive, negative):
            hidden = block_output(lm.model, config.layer, torch.tensor([chat_ids(lm, text)]))[0]
            means.append(hidden[-config.positions :].mean(dim=0))
        diffs.append(means[0] - means[1])
    direction = torch.stack(diffs).mean(dim=0)
    return SteeringVector(
        directions={config.layer: direction},
        scale=config.scale,
        model_hint=lm.name,
        method="caa",
        name=name,
        notes=f"contrastive mean difference over {len(pairs)} pairs, last {config.positions} tokens",
    )
