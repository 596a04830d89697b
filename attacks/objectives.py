"""Objectives for token-space search: activation shift at one layer (the main one), plus target-string CE and
output-distribution match (in `attacks.text_objectives`, re-exported here).

Public API (stable):

    ActivationObjectiveConfig(*, beta=0.1, gamma=1.0, consistency=0.0, batch_size=64, kv_reuse=True)
    activation_objective(lm, target (d,), layer, contexts: Sequence[str], *, placement="prefix",
                         generic: Tensor | None = None, config=ActivationObjectiveConfig()) -> ActivationShiftObjective
    ActivationShiftObjective(model, tokenizer, layout, target, layer, context_ids, *, generic=None, config=...)
        target (d,) at `layer`, generic (d,) | None                 # one layer
        target {layer: (d,)}, layer=None, generic {layer: (d,)} | None   # one steer at several layers
        .losses(prompts (B, L)) -> (B,)   .loss_and_grad(prompt (L,)) -> (float, (L, V))
        .metrics(prompt (L,)) -> {"cos", "specific_cos", "per_position_cos", "norm_ratio", "loss"}
                                 (+ "<name>@<layer>" per layer when several; unsuffixed = mean over layers)
        .shift_metrics(prompt (L,)) -> data.shift.ShiftMetrics                        (one layer)
        .shift_metrics_by_layer(prompt (L,)) -> {layer: data.shift.ShiftMetrics}
        .per_context_shifts(prompts (B, L)) -> (B, K, d)                                (one layer)
        .per_context_shifts_by_layer(prompts (B, L)) -> {layer: (B, K, d)}
        .position_deltas_by_layer(prompts (B, L)) -> {layer: (B, N, d)} at every aligned position after the prompt
        .restricted(context indices) -> ActivationShiftObjective on those contexts only (probe sampling)
        .content_scores(prompt (L,), lexicon) -> (n,) the content the prompt lacks (`attacks.content`)
        attributes: model, tokenizer, layout, layers (ascending), layer (the deepest), targets, generics, config,
                    context_ids, bases ({layer: per context (n_k, d) prompt-free activations at the aligned
                    positions}); one layer also: target, generic, base (the same for that layer)
    activation_loss(mean_shift (B, d), per_position_cos (B,), target (d,), generic (d,) | None, config) -> (B,)
    estimate_generic(lm, layout, layer, contexts: Sequence[str], prompts: Sequence[str] | None = None) -> (d,)
    estimate_generics(lm, layout, layers, contexts, prompts=None) -> {layer: (d,)}   # one forward for all layers
    (estimate_generic(s) live in attacks.generic_direction; TargetStringObjective, OutputMatchObjective in
    attacks.text_objectives; all re-exported here)

Loss (shared/README "Activation shift", "Specificity"), with M = mean over contexts of the per-context mean
delta D_k, t = a*v and P = projection orthogonal to g:

    1 - cos(M, t) + beta * (|M|/|t| - 1)^2 + gamma * (1 - cos(P M, P t)) + consistency * (1 - mean_kj cos(d_kj, t))

(`attacks.activation_loss`, re-exported here.) The gamma term is off when no g is given (nothing is estimated
implicitly: pass g, e.g. from `estimate_generic`).
Several layers: the loss is the sum over layers of this loss, each with its layer's M, t and g (shared/README
"Multi-layer steers"); the forward stops after the deepest layer.
The specific cosine floors both projected norms at 1e-3 of the unprojected ones, as `data.shift.specific_cosine`.

Speed: the forward stops after block `layer` and reuses KV (see `attacks.prompt_cache`): the template part before
the prompt runs once, each candidate's prompt tokens run once for all K contexts, and only the tokens after the
prompt run per (candidate, context), packed into one row per candidate (no padding, no per-context KV copies).
Base (prompt-free) activations are computed once at construction.
Candidates are scored `batch_size` at a time (x K contexts); the batch halves on out-of-memory and stays halved.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from realize.attacks.activation_loss import ActivationObjectiveConfig, activation_loss
from realize.attacks.base import map_in_batches
from realize.attacks.content import ContentLexicon, activation_content_scores
from realize.attacks.embeddings import one_hot_embeds, one_hot_grad
from realize.attacks.prompt_cache import KV, expand_kv, packed_mask, prefix_groups, run_to_layer, run_to_layers
from realize.data.activations import block_outputs, check_layer
from realize.data.chat import ChatLayout, Placement, chat_layout, encode
from realize.data.errors import UserInputError
from realize.data.models import LoadedModel, pad_id
from realize.data.shift import ShiftMetrics, pad_right, shift_metrics

logger = logging.getLogger(__name__)

__all__ = [
    "ActivationObjectiveConfig", "ActivationShiftObjective", "OutputMatchObjective", "TargetStringObjective",
    "activation_loss", "activation_objective", "estimate_generic", "estimate_generics", "one_hot_embeds",
]


@dataclass(frozen=True)
class _Group:
    """Contexts sharing the tokens before the prompt slot; their `post` segments are packed into one row."""

    contexts: tuple[int, ...]  # indices into the objective's contexts
    pre_kv: KV  # batch-1 KV of the shared `pre` tokens (blocks 0..deepest layer)
    post_ids: torch.Tensor  # (T,) the contexts' post segments, concatenated
    offsets: torch.Tensor  # (T,) position of each token inside its segment
    lengths: tuple[int, ...]  # segment lengths
    aligned: torch.Tensor  # (N,) aligned positions, as indices into the packed row
    segment: torch.Tensor  # (N,) which context (0..Kg-1) each aligned position belongs to
    base_post: dict[int, torch.Tensor]  # per layer: (N, d) base activations at those positions
    n_pre_aligned: tuple[int, ...]  # per context: aligned positions before the prompt (delta 0)


def _as_layer_map(value: torch.Tensor | Mapping[int, torch.Tensor] | None, layer: int | None,
                  what: str) -> dict[int, torch.Tensor] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        if layer is not None:
            raise UserInputError(f"layer: a per-layer {what} mapping names its own layers; pass layer=None")
        return {int(k): v for k, v in value.items()}
    if layer is None:
        raise UserInputError(f"layer: a single {what} tensor needs its layer (or pass {{layer: tensor}})")
    return {int(layer): value}


class ActivationShiftObjective:
    """Activation-shift objective at one block or several (see module docstring).

    Single layer: `target` (d,) at block `layer`, `generic` (d,) | None. Several layers (one steer that acts at
    all of them): `target` = {layer: (d,)} with `layer=None`, `generic` = {layer: (d,)} with the same layers, or
    None. The loss is the sum over layers of `activation_loss` of that layer's shift; the forward stops after the
    deepest layer and the KV reuse is the same as for one layer (the prompt's and the posts' keys/values up to
    the deepest block are computed once, every layer's output is read from the same forward)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        layout: ChatLayout,
        target: torch.Tensor | Mapping[int, torch.Tensor],
        layer: int | None,
        context_ids: Sequence[Sequence[int]],
        *,
        generic: torch.Tensor | Mapping[int, torch.Tensor] | None = None,
        config: ActivationObjectiveConfig = ActivationObjectiveConfig(),
    ) -> None:
        targets = _as_layer_map(target, layer, "target")
        generics = _as_layer_map(generic, None if isinstance(generic, Mapping) else layer, "generic")
        if not targets:
            raise UserInputError("target: expected at least one layer")
        for i in targets:
            check_layer(model, i, "layer")
        d = int(model.config.hidden_size)
        for i, t in targets.items():
            if t.dim() != 1 or t.shape[0] != d:
                raise UserInputError(f"target: expected a ({d},) vector for this model at layer {i}, got shape "
                                     f"{tuple(t.shape)}")
        if generics is not None:
            if set(generics) != set(targets):
                raise UserInputError(f"generic: expected one vector per target layer {sorted(targets)}, got layers "
                                     f"{sorted(generics)}")
            for i, g in generics.items():
                if g.dim() != 1 or g.shape[0] != d:
                    raise UserInputError(f"generic: expected a ({d},) vector at layer {i}, got shape "
                                         f"{tuple(g.shape)}")
        if not context_ids or any(len(c) == 0 for c in context_ids):
            raise UserInputError("contexts: expected at least one non-empty context")
        self.model, self.tokenizer, self.layout, self.config = model, tokenizer, layout, config
        self.layers = tuple(sorted(targets))  # every layer the loss reads, ascending
        self.layer = self.layers[-1]  # the deepest: the forward stops after this block
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.targets = {i: targets[i].detach().float().to(self.device) for i in self.layers}
        self.generics = None if generics is None else {
            i: generics[i].detach().float().to(self.device) for i in self.layers}
        self.context_ids = tuple(tuple(c) for c in context_ids)
        self.pad_id = pad_id(tokenizer)
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        self._batch = config.batch_size
        self.bases = self._base_activations()
        self._n_aligned = torch.tensor([float(b.shape[0]) for b in self.bases[self.layer]], device=self.device)
        self._groups = self._build_groups()

    # ---- single-layer views (the stable API of a one-layer objective) ----------------------------------------
    @property
    def multi_layer(self) -> bool:
        return len(self.layers) > 1

    def _single(self, what: str) -> int:
        if self.multi_layer:
            raise ValueError(f"{what}: this objective has one target per layer {list(self.layers)}; use the "
                             f"per-layer attribute or method (targets, generics, bases, *_by_layer)")
        return self.layer

    @property
    def target(self) -> torch.Tensor:
        """t (d,) of a single-layer objective."""
        return self.targets[self._single("target")]

    @property
    def generic(self) -> torch.Tensor | None:
        """g (d,) | None of a single-layer objective."""
        layer = self._single("generic")
        return None if self.generics is None else self.generics[layer]

    @property
    def base(self) -> list[torch.Tensor]:
        """Per context (n_k, d) prompt-free activations at the aligned positions (single-layer objective)."""
        return self.bases[self._single("base")]

    # ---- precomputation -------------------------------------------------------------------------------------
    @torch.no_grad()
    def _base_activations(self, chunk: int = 32) -> dict[int, list[torch.Tensor]]:
        """{layer: per context (n_k, d)} block outputs of the prompt-free inputs at the aligned positions (what
        `data.shift.aligned_activations` computes per layer, all layers from one forward)."""
        placed = [self.layout.place(None, ctx) for ctx in self.context_ids]
        out: dict[int, list[torch.Tensor]] = {i: [] for i in self.layers}
        for start in range(0, len(placed), chunk):
            part = placed[start : start + chunk]
            ids, mask = pad_right([p.ids for p in part], self.pad_id)
            hidden = block_outputs(self.model, self.layers, input_ids=ids.to(self.device),
                                   attention_mask=mask.to(self.device))
            for i in self.layers:
                out[i].extend(hidden[i][b, list(p.aligned)].float() for b, p in enumerate(part))
        return out

    @torch.no_grad()
    def _build_groups(self) -> tuple[_Group, ...]:
        groups = []
        for ks, segs, pre_kv in prefix_groups(self.model, self.layout, self.context_ids, self.layer, self.device):
            ids, offsets, aligned, owner = [], [], [], []
            for i, seg in enumerate(segs):
                start = len(ids)
                ids.extend(seg.post)
                offsets.extend(range(len(seg.post)))
                aligned.extend(start + j for j in seg.post_aligned)
                owner.extend([i] * len(seg.post_aligned))
            pairs = list(zip(ks, segs, strict=True))
            base = {layer: torch.cat([self.bases[layer][k][seg.n_pre_aligned :] for k, seg in pairs]).to(self.device)
                    for layer in self.layers}
            groups.append(_Group(
                tuple(ks), pre_kv, torch.tensor(ids, device=self.device), torch.tensor(offsets, device=self.device),
                tuple(len(seg.post) for seg in segs), torch.tensor(aligned, device=self.device),
                torch.tensor(owner, device=self.device), base, tuple(seg.n_pre_aligned for seg in segs),
            ))
        return tuple(groups)

    # ---- the hot path ---------------------------------------------------------------------------------------
    def _group_deltas(self, group: _Group, prompts: torch.Tensor | None,
                      embeds: torch.Tensor | None) -> dict[int, torch.Tensor]:
        """Per layer: deltas at the group's aligned post positions, (B, N, d) float (`group.segment` says whose)."""
        batch = prompts.shape[0] if prompts is not None else embeds.shape[0]  # type: ignore[union-attr]
        _, kv = run_to_layer(
            self.model, self.layer, input_ids=prompts, inputs_embeds=embeds, past=expand_kv(group.pre_kv, batch)
        )
        past_len = kv[0][0].shape[2]
        mask = packed_mask(past_len, group.lengths, self.dtype, self.device)
        hidden, _ = run_to_layers(
            self.model, self.layers, input_ids=group.post_ids.expand(batch, -1), attention_mask=mask,
            position_ids=(group.offsets + past_len).unsqueeze(0), past=kv,
        )
        return {i: hidden[i][:, group.aligned].float() - group.base_post[i] for i in self.layers}

    def _full_deltas(self, prompts: torch.Tensor) -> dict[int, list[torch.Tensor]]:
        """Reference path without KV reuse: per layer, per context k, deltas (B, n_k, d) from full early-exit
        forwards."""
        out: dict[int, list[torch.Tensor]] = {i: [] for i in self.layers}
        for k, ctx in enumerate(self.context_ids):
            placed = [self.layout.place(p.tolist(), ctx) for p in prompts]
            ids, mask = pad_right([x.ids for x in placed], self.pad_id)
            hidden = block_outputs(self.model, self.layers, input_ids=ids.to(self.device),
                                   attention_mask=mask.to(self.device))
            for i in self.layers:
                out[i].append(placed[0].zero_unreachable(
                    hidden[i].float()[:, list(placed[0].aligned)] - self.bases[i][k].unsqueeze(0)))
        return out

    def _reduce(self, prompts: torch.Tensor | None,
                embeds: torch.Tensor | None) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """-> per layer: per-context mean deltas D (B, K, d) and mean per-position cosine with that layer's
        target (B,)."""
        if not self.config.kv_reuse and prompts is not None:
            out = {}
            for i, deltas in self._full_deltas(prompts).items():
                t = self.targets[i].view(1, 1, -1)
                d_all = torch.stack([d.mean(dim=1) for d in deltas], dim=1)
                cos_sum = sum(F.cosine_similarity(d, t, dim=-1).sum(dim=1) for d in deltas)
                out[i] = (d_all, cos_sum / self._n_aligned.sum())
            return out  # type: ignore[return-value]
        parts: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {i: [] for i in self.layers}
        for group in self._groups:
            for i, delta in self._group_deltas(group, prompts, embeds).items():  # (B, N, d)
                cos = F.cosine_similarity(delta, self.targets[i].view(1, 1, -1), dim=-1).sum(dim=1, keepdim=True)
                zeros = delta.new_zeros(delta.shape[0], len(group.contexts), delta.shape[2])
                parts[i].append((zeros.index_add(1, group.segment, delta), cos))
        order = [k for group in self._groups for k in group.contexts]
        inverse = torch.tensor(order, device=self.device).argsort()
        out = {}
        for i, layer_parts in parts.items():
            sums = torch.cat([p[0] for p in layer_parts], dim=1)[:, inverse]  # (B, K, d)
            cos_sum = torch.cat([p[1] for p in layer_parts], dim=1).sum(dim=1)
            out[i] = (sums / self._n_aligned.view(1, -1, 1), cos_sum / self._n_aligned.sum())
        return out

    def _loss(self, reduced: Mapping[int, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Sum over layers of the per-layer activation loss, (B,)."""
        total = None
        for i, (d_all, pp) in reduced.items():
            g = None if self.generics is None else self.generics[i]
            loss = activation_loss(d_all.mean(dim=1), pp, self.targets[i], g, self.config)
            total = loss if total is None else total + loss
        return total  # type: ignore[return-value]

    def _check(self, prompts: torch.Tensor) -> torch.Tensor:
        if prompts.dim() != 2 or prompts.shape[1] == 0:
            raise ValueError(f"prompts: expected a (B, L) tensor with L >= 1, got shape {tuple(prompts.shape)}")
        if prompts.numel() and (prompts.min() < 0 or prompts.max() >= self.vocab_size):
            raise ValueError(f"prompts: token ids must lie in 0..{self.vocab_size - 1}")
        return prompts.to(self.device, torch.long)

    def restricted(self, contexts: Sequence[int]) -> ActivationShiftObjective:
        """The same objective (targets, g, config) on a subset of its contexts, by index: e.g. probe sampling's
        cheap first pass."""
        idx = list(contexts)
        if not idx or any(not 0 <= i < len(self.context_ids) for i in idx):
            raise ValueError(f"contexts: expected indices in 0..{len(self.context_ids) - 1}, got {idx}")
        return ActivationShiftObjective(self.model, self.tokenizer, self.layout, dict(self.targets), None,
                                        [self.context_ids[i] for i in idx],
                                        generic=None if self.generics is None else dict(self.generics),
                                        config=self.config)

    def content_scores(self, prompt: torch.Tensor, lexicon: ContentLexicon) -> torch.Tensor | None:
        """(n,) how much each lexicon word is the content `prompt` (L,) still lacks (`attacks.content`)."""
        return activation_content_scores(self, prompt, lexicon)

    # ---- Objective protocol ---------------------------------------------------------------------------------
    @torch.no_grad()
    def losses(self, prompts: torch.Tensor) -> torch.Tensor:
        """prompts (B, L) long -> losses (B,) float32 on CPU; the batch halves on out-of-memory and stays halved."""

        def batch_losses(chunk: torch.Tensor) -> torch.Tensor:
            return self._loss(self._reduce(chunk, None)).cpu()

        out, self._batch = map_in_batches(batch_losses, self._check(prompts), self._batch)
        return out

    def loss_and_grad(self, prompt: torch.Tensor) -> tuple[float, torch.Tensor]:
        """prompt (L,) -> (loss, d loss / d one-hot (L, V)) through the early-exit forward over all contexts."""
        return one_hot_grad(self.model, self._check(prompt.unsqueeze(0))[0],
                            lambda embeds: self._loss(self._reduce(None, embeds))[0])

    @torch.no_grad()
    def position_deltas_by_layer(self, prompts: torch.Tensor) -> dict[int, torch.Tensor]:
        """prompts (B, L) long -> {layer: (B, N, d) float}: the deltas at every aligned position after the prompt
        slot, over all contexts (the positions a prompt can move; contexts in group order)."""
        prompts = self._check(prompts)
        parts: dict[int, list[torch.Tensor]] = {i: [] for i in self.layers}
        for group in self._groups:
            for i, delta in self._group_deltas(group, prompts, None).items():
                parts[i].append(delta)
        return {i: torch.cat(p, dim=1) for i, p in parts.items()}

    @torch.no_grad()
    def per_context_shifts_by_layer(self, prompts: torch.Tensor) -> dict[int, torch.Tensor]:
        """prompts (B, L) long -> {layer: per-context mean deltas D (B, K, d) float}, contexts in objective order."""
        return {i: d for i, (d, _) in self._reduce(self._check(prompts), None).items()}

    @torch.no_grad()
    def per_context_shifts(self, prompts: torch.Tensor) -> torch.Tensor:
        """prompts (B, L) long -> per-context mean deltas D (B, K, d) float (single-layer objective)."""
        return self.per_context_shifts_by_layer(prompts)[self._single("per_context_shifts")]

    @torch.no_grad()
    def shift_metrics_by_layer(self, prompt: torch.Tensor) -> dict[int, ShiftMetrics]:
        """{layer: full `data.shift.ShiftMetrics`} of one prompt (L,) on this objective's contexts."""
        prompt = self._check(prompt.unsqueeze(0))
        deltas = {i: [torch.empty(0)] * len(self.context_ids) for i in self.layers}
        for group in self._groups:
            by_layer = self._group_deltas(group, prompt, None)
            for layer, delta in by_layer.items():
                for j, k in enumerate(group.contexts):
                    rows = delta[0][group.segment == j]
                    deltas[layer][k] = torch.cat([rows.new_zeros(group.n_pre_aligned[j], rows.shape[1]), rows]).cpu()
        return {i: shift_metrics(deltas[i], self.targets[i].cpu(),
                                 None if self.generics is None else self.generics[i].cpu()) for i in self.layers}

    def shift_metrics(self, prompt: torch.Tensor) -> ShiftMetrics:
        """Full `data.shift.ShiftMetrics` of one prompt (L,) on this objective's contexts (single-layer)."""
        return self.shift_metrics_by_layer(prompt)[self._single("shift_metrics")]

    def metrics(self, prompt: torch.Tensor) -> Mapping[str, float]:
        """{"cos", "specific_cos" (with g), "per_position_cos", "norm_ratio", "loss"}. Several layers: the same
        names per layer with "@{layer}" appended (e.g. "specific_cos@12"), and the unsuffixed names hold the mean
        over layers (loss: the objective's total, the sum over layers)."""
        by_layer = self.shift_metrics_by_layer(prompt)
        out: dict[str, float] = {}
        names = ("cos", "per_position_cos", "norm_ratio") + (("specific_cos",) if self.generics is not None else ())
        for name in names:
            values = [float(getattr(m, name)) for m in by_layer.values()]
            out[name] = sum(values) / len(values)
            if self.multi_layer:
                out.update({f"{name}@{i}": v for i, v in zip(by_layer, values, strict=True)})
        out["loss"] = float(self.losses(prompt.unsqueeze(0))[0])
        return out


def activation_objective(
    lm: LoadedModel,
    target: torch.Tensor | Mapping[int, torch.Tensor],
    layer: int | None,
    contexts: Sequence[str],
    *,
    placement: Placement = "prefix",
    generic: torch.Tensor | Mapping[int, torch.Tensor] | None = None,
    config: ActivationObjectiveConfig = ActivationObjectiveConfig(),
) -> ActivationShiftObjective:
    """Build the activation-shift objective for `target` = a*v (d,) at block `layer` on chat contexts (or, with
    `layer=None`, for per-layer targets {layer: (d,)} and per-layer `generic`)."""
    if not contexts:
        raise UserInputError("contexts: expected at least one context")
    layout = chat_layout(lm.tokenizer, placement)
    ids = [encode(lm.tokenizer, c) for c in contexts]
    return ActivationShiftObjective(lm.model, lm.tokenizer, layout, target, layer, ids, generic=generic, config=config)


from realize.attacks.generic_direction import estimate_generic, estimate_generics  # noqa: E402  (re-export)
from realize.attacks.text_objectives import OutputMatchObjective, TargetStringObjective  # noqa: E402  (re-export)
