"""Objectives for token-space search: activation shift at one layer (the main one), plus target-string CE and
output-distribution match (in `attacks.text_objectives`, re-exported here).

Public API (stable):

    ActivationObjectiveConfig(*, beta=0.1, gamma=1.0, consistency=0.0, batch_size=64, kv_reuse=True)
    activation_objective(lm, target (d,), layer, contexts: Sequence[str], *, placement="prefix",
                         generic: Tensor | None = None, config=ActivationObjectiveConfig()) -> ActivationShiftObjective
    ActivationShiftObjective(model, tokenizer, layout, target, layer, context_ids, *, generic=None, config=...)
        .losses(prompts (B, L)) -> (B,)   .loss_and_grad(prompt (L,)) -> (float, (L, V))
        .metrics(prompt (L,)) -> {"cos", "specific_cos", "per_position_cos", "norm_ratio", "loss"}
        .shift_metrics(prompt (L,)) -> data.shift.ShiftMetrics
        attributes: model, tokenizer, layout, layer, target, generic, config, context_ids,
                    base (per context (n_k, d) prompt-free activations at the aligned positions)
    activation_loss(mean_shift (B, d), per_position_cos (B,), target (d,), generic (d,) | None, config) -> (B,)
    estimate_generic(lm, layout, layer, contexts: Sequence[str], prompts: Sequence[str] | None = None) -> (d,)
    TargetStringObjective, OutputMatchObjective (see attacks.text_objectives)

Loss (shared/README "Activation shift", "Specificity"), with M = mean over contexts of the per-context mean
delta D_k, t = a*v and P = projection orthogonal to g:

    1 - cos(M, t) + beta * (|M|/|t| - 1)^2 + gamma * (1 - cos(P M, P t)) + consistency * (1 - mean_kj cos(d_kj, t))

The gamma term is off when no g is given (nothing is estimated implicitly: pass g, e.g. from `estimate_generic`).
The specific cosine floors both projected norms at 1e-3 of the unprojected ones, as `data.shift.specific_cosine`.

Speed: the forward stops after block `layer` and reuses KV (see `attacks.prompt_cache`): the template part before
the prompt runs once, each candidate's prompt tokens run once for all K contexts, and only the tokens after the
prompt run per (candidate, context), packed into one row per candidate (no padding, no per-context KV copies).
Base (prompt-free) activations are computed once at construction.
Candidates are scored `batch_size` at a time (x K contexts); the batch halves on out-of-memory and stays halved.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from realize.attacks.base import map_in_batches
from realize.attacks.embeddings import one_hot_embeds, one_hot_grad
from realize.attacks.prompt_cache import KV, expand_kv, packed_mask, run_to_layer, segments
from realize.data.activations import block_output, check_layer
from realize.data.chat import ChatLayout, Placement, chat_layout, encode
from realize.data.errors import UserInputError
from realize.data.models import LoadedModel, pad_id
from realize.data.shift import ShiftMetrics, aligned_activations, pad_right, project_out, shift_metrics

logger = logging.getLogger(__name__)

__all__ = [
    "ActivationObjectiveConfig", "ActivationShiftObjective", "OutputMatchObjective", "TargetStringObjective",
    "activation_loss", "activation_objective", "estimate_generic", "one_hot_embeds",
]


@dataclass(frozen=True, kw_only=True)
class ActivationObjectiveConfig:
    beta: float = 0.1  # weight of the norm term (|M|/|t| - 1)^2
    gamma: float = 1.0  # weight of the specific-cosine term 1 - cos(PM, Pt); ignored without g
    consistency: float = 0.0  # weight of the per-position term 1 - mean cos(d_kj, t)
    batch_size: int = 64  # candidates per forward (each x K contexts); halved on out-of-memory
    kv_reuse: bool = True  # False: every placed input runs from scratch (reference path, for tests/benchmarks)

    def __post_init__(self) -> None:
        for name in ("beta", "gamma", "consistency"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {self.batch_size!r}")


def activation_loss(
    mean: torch.Tensor,
    per_position_cos: torch.Tensor,
    target: torch.Tensor,
    generic: torch.Tensor | None,
    config: ActivationObjectiveConfig,
) -> torch.Tensor:
    """mean shift M (B, d), mean per-position cosine (B,), target t (d,), g (d,) | None -> loss (B,)."""
    t = target.to(mean)
    loss = 1 - F.cosine_similarity(mean, t.unsqueeze(0), dim=-1)
    loss = loss + config.beta * (mean.norm(dim=-1) / t.norm().clamp_min(1e-12) - 1) ** 2
    if generic is not None and config.gamma > 0:
        a, b = project_out(mean, generic.to(mean)), project_out(t, generic.to(mean))
        na = torch.maximum(a.norm(dim=-1), 1e-3 * mean.norm(dim=-1)).clamp_min(1e-12)
        nb = torch.maximum(b.norm(), 1e-3 * t.norm()).clamp_min(1e-12)
        loss = loss + config.gamma * (1 - (a @ b) / (na * nb))
    if config.consistency > 0:
        loss = loss + config.consistency * (1 - per_position_cos)
    return loss


@dataclass(frozen=True)
class _Group:
    """Contexts sharing the tokens before the prompt slot; their `post` segments are packed into one row."""

    contexts: tuple[int, ...]  # indices into the objective's contexts
    pre_kv: KV  # batch-1 KV of the shared `pre` tokens
    post_ids: torch.Tensor  # (T,) the contexts' post segments, concatenated
    offsets: torch.Tensor  # (T,) position of each token inside its segment
    lengths: tuple[int, ...]  # segment lengths
    aligned: torch.Tensor  # (N,) aligned positions, as indices into the packed row
    segment: torch.Tensor  # (N,) which context (0..Kg-1) each aligned position belongs to
    base_post: torch.Tensor  # (N, d) base activations at those positions
    n_pre_aligned: tuple[int, ...]  # per context: aligned positions before the prompt (delta 0)


class ActivationShiftObjective:
    """Activation-shift objective at block `layer` over K contexts (see module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        layout: ChatLayout,
        target: torch.Tensor,
        layer: int,
        context_ids: Sequence[Sequence[int]],
        *,
        generic: torch.Tensor | None = None,
        config: ActivationObjectiveConfig = ActivationObjectiveConfig(),
    ) -> None:
        check_layer(model, layer)
        d = int(model.config.hidden_size)
        if target.dim() != 1 or target.shape[0] != d:
            raise UserInputError(f"target: expected a ({d},) vector for this model, got shape {tuple(target.shape)}")
        if generic is not None and (generic.dim() != 1 or generic.shape[0] != d):
            raise UserInputError(f"generic: expected a ({d},) vector, got shape {tuple(generic.shape)}")
        if not context_ids or any(len(c) == 0 for c in context_ids):
            raise UserInputError("contexts: expected at least one non-empty context")
        self.model, self.tokenizer, self.layout, self.layer, self.config = model, tokenizer, layout, layer, config
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.target = target.detach().float().to(self.device)
        self.generic = None if generic is None else generic.detach().float().to(self.device)
        self.context_ids = tuple(tuple(c) for c in context_ids)
        self.pad_id = pad_id(tokenizer)
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        self._batch = config.batch_size
        self.base = aligned_activations(model, layout, None, self.context_ids, layer, pad_id=self.pad_id)
        self._n_aligned = torch.tensor([float(b.shape[0]) for b in self.base], device=self.device)
        self._groups = self._build_groups()

    # ---- precomputation -------------------------------------------------------------------------------------
    @torch.no_grad()
    def _build_groups(self) -> tuple[_Group, ...]:
        segs = [segments(self.layout, c) for c in self.context_ids]
        by_pre: dict[tuple[int, ...], list[int]] = {}
        for k, seg in enumerate(segs):
            by_pre.setdefault(seg.pre, []).append(k)
        groups = []
        for pre, ks in by_pre.items():
            _, pre_kv = run_to_layer(self.model, self.layer, input_ids=torch.tensor([pre], device=self.device))
            ids, offsets, aligned, owner, base = [], [], [], [], []
            for i, k in enumerate(ks):
                start = len(ids)
                ids.extend(segs[k].post)
                offsets.extend(range(len(segs[k].post)))
                aligned.extend(start + j for j in segs[k].post_aligned)
                owner.extend([i] * len(segs[k].post_aligned))
                base.append(self.base[k][segs[k].n_pre_aligned :])
            groups.append(_Group(
                tuple(ks), pre_kv, torch.tensor(ids, device=self.device), torch.tensor(offsets, device=self.device),
                tuple(len(segs[k].post) for k in ks), torch.tensor(aligned, device=self.device),
                torch.tensor(owner, device=self.device), torch.cat(base).to(self.device),
                tuple(segs[k].n_pre_aligned for k in ks),
            ))
        return tuple(groups)

    # ---- the hot path ---------------------------------------------------------------------------------------
    def _group_deltas(self, group: _Group, prompts: torch.Tensor | None, embeds: torch.Tensor | None) -> torch.Tensor:
        """Deltas at the group's aligned post positions, (B, N, d) float (`group.segment` says whose)."""
        batch = prompts.shape[0] if prompts is not None else embeds.shape[0]  # type: ignore[union-attr]
        _, kv = run_to_layer(
            self.model, self.layer, input_ids=prompts, inputs_embeds=embeds, past=expand_kv(group.pre_kv, batch)
        )
        past_len = kv[0][0].shape[2]
        mask = packed_mask(past_len, group.lengths, self.dtype, self.device)
        hidden, _ = run_to_layer(
            self.model, self.layer, input_ids=group.post_ids.expand(batch, -1), attention_mask=mask,
            position_ids=(group.offsets + past_len).unsqueeze(0), past=kv,
        )
        return hidden[:, group.aligned].float() - group.base_post

    def _full_deltas(self, prompts: torch.Tensor) -> list[torch.Tensor]:
        """Reference path without KV reuse: per context k, deltas (B, n_k, d) from full early-exit forwards."""
        out = []
        for k, ctx in enumerate(self.context_ids):
            placed = [self.layout.place(p.tolist(), ctx) for p in prompts]
            ids, mask = pad_right([x.ids for x in placed], self.pad_id)
            hidden = block_output(self.model, self.layer, ids.to(self.device), mask.to(self.device)).float()
            out.append(hidden[:, list(placed[0].aligned)] - self.base[k].unsqueeze(0))
        return out

    def _reduce(self, prompts: torch.Tensor | None, embeds: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> per-context mean deltas D (B, K, d) and mean per-position cosine (B,)."""
        t = self.target.view(1, 1, 1, -1)
        if not self.config.kv_reuse and prompts is not None:
            deltas = self._full_deltas(prompts)
            d_all = torch.stack([d.mean(dim=1) for d in deltas], dim=1)
            cos_sum = sum(F.cosine_similarity(d, t[0], dim=-1).sum(dim=1) for d in deltas)
            return d_all, cos_sum / self._n_aligned.sum()  # type: ignore[operator]
        parts: list[tuple[tuple[int, ...], torch.Tensor, torch.Tensor]] = []
        for group in self._groups:
            delta = self._group_deltas(group, prompts, embeds)  # (B, N, d)
            cos = F.cosine_similarity(delta, t[0], dim=-1).sum(dim=1, keepdim=True)  # (B, 1)
            zeros = delta.new_zeros(delta.shape[0], len(group.contexts), delta.shape[2])
            parts.append((group.contexts, zeros.index_add(1, group.segment, delta), cos))
        order = [k for ks, _, _ in parts for k in ks]
        inverse = torch.tensor(order, device=self.device).argsort()
        sums = torch.cat([p[1] for p in parts], dim=1)[:, inverse]  # (B, K, d)
        cos_sum = torch.cat([p[2] for p in parts], dim=1).sum(dim=1)
        return sums / self._n_aligned.view(1, -1, 1), cos_sum / self._n_aligned.sum()

    def _check(self, prompts: torch.Tensor) -> torch.Tensor:
        if prompts.dim() != 2 or prompts.shape[1] == 0:
            raise ValueError(f"prompts: expected a (B, L) tensor with L >= 1, got shape {tuple(prompts.shape)}")
        if prompts.numel() and (prompts.min() < 0 or prompts.max() >= self.vocab_size):
            raise ValueError(f"prompts: token ids must lie in 0..{self.vocab_size - 1}")
        return prompts.to(self.device, torch.long)

    # ---- Objective protocol ---------------------------------------------------------------------------------
    @torch.no_grad()
    def losses(self, prompts: torch.Tensor) -> torch.Tensor:
        """prompts (B, L) long -> losses (B,) float32 on CPU; the batch halves on out-of-memory and stays halved."""

        def batch_losses(chunk: torch.Tensor) -> torch.Tensor:
            d_all, pp = self._reduce(chunk, None)
            return activation_loss(d_all.mean(dim=1), pp, self.target, self.generic, self.config).cpu()

        out, self._batch = map_in_batches(batch_losses, self._check(prompts), self._batch)
        return out

    def loss_and_grad(self, prompt: torch.Tensor) -> tuple[float, torch.Tensor]:
        """prompt (L,) -> (loss, d loss / d one-hot (L, V)) through the early-exit forward over all contexts."""

        def loss(embeds: torch.Tensor) -> torch.Tensor:
            d_all, pp = self._reduce(None, embeds)
            return activation_loss(d_all.mean(dim=1), pp, self.target, self.generic, self.config)[0]

        return one_hot_grad(self.model, self._check(prompt.unsqueeze(0))[0], loss)

    @torch.no_grad()
    def per_context_shifts(self, prompts: torch.Tensor) -> torch.Tensor:
        """prompts (B, L) long -> per-context mean deltas D (B, K, d) float, in the objective's context order."""
        return self._reduce(self._check(prompts), None)[0]

    @torch.no_grad()
    def shift_metrics(self, prompt: torch.Tensor) -> ShiftMetrics:
        """Full `data.shift.ShiftMetrics` of one prompt (L,) on this objective's contexts."""
        prompt = self._check(prompt.unsqueeze(0))
        deltas: list[torch.Tensor] = [torch.empty(0)] * len(self.context_ids)
        for group in self._groups:
            delta = self._group_deltas(group, prompt, None)[0]  # (N, d)
            for i, k in enumerate(group.contexts):
                rows = delta[group.segment == i]
                deltas[k] = torch.cat([rows.new_zeros(group.n_pre_aligned[i], rows.shape[1]), rows]).cpu()
        return shift_metrics(deltas, self.target.cpu(), None if self.generic is None else self.generic.cpu())

    def metrics(self, prompt: torch.Tensor) -> Mapping[str, float]:
        m = self.shift_metrics(prompt)
        out = {"cos": m.cos, "per_position_cos": m.per_position_cos, "norm_ratio": m.norm_ratio}
        if m.specific_cos is not None:
            out["specific_cos"] = m.specific_cos
        out["loss"] = float(self.losses(prompt.unsqueeze(0))[0])
        return out


def activation_objective(
    lm: LoadedModel,
    target: torch.Tensor,
    layer: int,
    contexts: Sequence[str],
    *,
    placement: Placement = "prefix",
    generic: torch.Tensor | None = None,
    config: ActivationObjectiveConfig = ActivationObjectiveConfig(),
) -> ActivationShiftObjective:
    """Build the activation-shift objective for `target` = a*v (d,) at block `layer` on chat contexts."""
    if not contexts:
        raise UserInputError("contexts: expected at least one context")
    layout = chat_layout(lm.tokenizer, placement)
    ids = [encode(lm.tokenizer, c) for c in contexts]
    return ActivationShiftObjective(lm.model, lm.tokenizer, layout, target, layer, ids, generic=generic, config=config)


def estimate_generic(
    lm: LoadedModel,
    layout: ChatLayout,
    layer: int,
    contexts: Sequence[str],
    prompts: Sequence[str] | None = None,
) -> torch.Tensor:
    """g (d,): mean shift of generic natural prompts (default: the shipped `generic_prompts` corpus) on these
    contexts — the quantity `data.shift.generic_direction` defines (equal to it within float error; a test checks),
    computed with this module's early-exit, KV-reusing forward, prompts batched by token length."""
    if prompts is None:
        from realize.data.corpora import load_corpus  # written in parallel; imported late

        prompts = load_corpus("generic_prompts")
    tok = lm.tokenizer
    ids = [encode(tok, p) for p in prompts]
    if not [i for i in ids if i] or not contexts:
        raise UserInputError("generic direction: expected at least one generic prompt and one context")
    probe = ActivationShiftObjective(lm.model, tok, layout, torch.ones(lm.hidden_size), layer,
                                     [encode(tok, c) for c in contexts])
    by_length: dict[int, list[list[int]]] = {}
    for row in ids:
        if row:
            by_length.setdefault(len(row), []).append(row)
    shifts = []
    with torch.no_grad():
        for rows in by_length.values():
            shifts.append(probe.per_context_shifts(torch.tensor(rows)).mean(dim=1))  # (B, d)
    return torch.cat(shifts).mean(dim=0).cpu()


from realize.attacks.text_objectives import OutputMatchObjective, TargetStringObjective  # noqa: E402  (re-export)
