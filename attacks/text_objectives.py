"""Objectives on the model's outputs: nanoGCG's target-string cross-entropy and output-distribution match.

Public API (stable; re-exported by `attacks.objectives`):

    TargetStringObjective(model, tokenizer, message, target, *, add_space_before_target=False, batch_size=64,
                          share_buckets=4)
        nanoGCG 0.3.0's objective: the prompt is the optimized string appended to the user `message` (nanoGCG's
        `{optim_str}` at the end when the message has no placeholder; a `{optim_str}` inside the message is
        honoured), loss = mean CE of `target` after the chat template's assistant header. Full forward to logits,
        but the template part before the prompt runs once (KV reuse) and the LM head runs only at the positions
        that predict the target; candidates sharing a prefix with the batch's majority prompt reuse its KV too
        (GCG's single swaps share everything before the swapped position). Use GCG with layout=None (nanoGCG's
        own-text retokenization check). Like nanoGCG, a template that starts with the BOS token's text loses it
        (SmolLM2's BOS is "<|im_start|>", so the first turn marker is dropped there too: kept for a like-for-like
        benchmark).
    OutputMatchObjective(model, tokenizer, layout, vector (d,) = a*v, layer, context_ids, *, batch_size=8)
        mean over contexts and aligned positions of KL(steered || prompted) of next-token distributions; the
        steered log-probs (base input + a*v at `layer`) are computed once. Aligned positions before the prompt
        (suffix placement) cannot depend on it: their KL(steered || base) enters as a constant.
    final_logits(model, hidden (..., d)) -> (..., V)   # final norm + LM head (+ soft-capping if configured)

Both implement `attacks.base.Objective`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from realize.attacks.embeddings import one_hot_grad
from realize.attacks.prompt_cache import KV, expand_kv, run_to_layer, segments
from realize.data.activations import check_layer, num_layers, steer
from realize.data.chat import ChatLayout, encode
from realize.data.errors import UserInputError

__all__ = ["OutputMatchObjective", "TargetStringObjective", "final_logits"]


def final_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Raw last-block output (..., d) -> logits (..., V): the base model's final `norm`, then the LM head."""
    norm = getattr(getattr(model, "model", model), "norm", None)
    head = model.get_output_embeddings()
    if norm is None or head is None:
        raise UserInputError(f"{type(model).__name__}: expected a final `norm` and an LM head for logits")
    logits = head(norm(hidden)).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def _check(prompts: torch.Tensor, vocab: int) -> torch.Tensor:
    if prompts.dim() != 2 or prompts.shape[1] == 0:
        raise ValueError(f"prompts: expected a (B, L) tensor with L >= 1, got shape {tuple(prompts.shape)}")
    if prompts.min() < 0 or prompts.max() >= vocab:
        raise ValueError(f"prompts: token ids must lie in 0..{vocab - 1}")
    return prompts.long()


class TargetStringObjective:
    """nanoGCG's target-string CE (see module docstring)."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, message: str, target: str, *,
                 add_space_before_target: bool = False, batch_size: int = 64, share_buckets: int = 4) -> None:
        if share_buckets < 1:
            raise ValueError(f"share_buckets: expected >= 1, got {share_buckets}")
        if not getattr(tokenizer, "chat_template", None):
            raise UserInputError("tokenizer: it has no chat template, which the target-string objective needs")
        if not target:
            raise UserInputError("target: expected a non-empty target string")
        content = message if "{optim_str}" in message else message + "{optim_str}"
        template = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                 add_generation_prompt=True)
        if tokenizer.bos_token and template.startswith(tokenizer.bos_token):
            template = template[len(tokenizer.bos_token):]
        before, after = template.split("{optim_str}")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.share_buckets = share_buckets
        self.last = num_layers(model) - 1
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        before_ids = tokenizer(before)["input_ids"]  # nanoGCG tokenizes the part before with special tokens
        self.after = torch.tensor(encode(tokenizer, after), dtype=torch.long, device=self.device)
        self.target_ids = torch.tensor(encode(tokenizer, (" " if add_space_before_target else "") + target),
                                       dtype=torch.long, device=self.device)
        with torch.no_grad():
            _, self.before_kv = run_to_layer(model, self.last, input_ids=torch.tensor([before_ids], device=self.device))

    def _loss(self, batch: int, n_new_prompt: int, input_ids: torch.Tensor | None, embeds: torch.Tensor | None,
              past: KV | None = None) -> torch.Tensor:
        """CE of the target after `past` (default: the template before the prompt) + new tokens, which are the last
        `n_new_prompt` prompt tokens, then `after` and the target."""
        hidden, _ = run_to_layer(self.model, self.last, input_ids=input_ids, inputs_embeds=embeds,
                                 past=expand_kv(self.before_kv if past is None else past, batch))
        n_t = self.target_ids.shape[0]
        start = n_new_prompt + self.after.shape[0] - 1  # position predicting the first target token
        logits = final_logits(self.model, hidden[:, start : start + n_t])  # (B, n_t, V)
        ce = F.cross_entropy(logits.transpose(1, 2), self.target_ids.unsqueeze(0).expand(batch, -1), reduction="none")
        return ce.mean(dim=1)

    @torch.no_grad()
    def losses(self, prompts: torch.Tensor) -> torch.Tensor:
        """prompts (B, L) -> CE (B,). Candidates that agree with the batch's per-position majority prompt on their
        first c tokens (GCG's swaps of the current prompt do, up to the swapped position) reuse that prefix's KV:
        c is rounded down to one of `share_buckets` cut points, so each cut runs as one batch."""
        prompts = _check(prompts, self.vocab_size).to(self.device)
        batch, length = prompts.shape
        tail = torch.cat([self.after, self.target_ids])
        ref = prompts.mode(dim=0).values  # (L,)
        shared = (prompts == ref).long().cumprod(dim=1).sum(dim=1).clamp(max=length - 1)  # leading matches (B,)
        cuts = sorted({length * q // self.share_buckets for q in range(self.share_buckets)} if batch > 1 else {0})
        bucket = torch.zeros(batch, dtype=torch.long, device=self.device)
        for c in cuts:
            bucket[shared >= c] = c
        ref_kv = None
        if max(cuts) > 0 and bool((bucket > 0).any()):
            _, ref_kv = run_to_layer(self.model, self.last, input_ids=ref[: max(cuts)].unsqueeze(0),
                                     past=self.before_kv)
        n_before = self.before_kv[0][0].shape[2]
        out = torch.empty(batch)
        for c in cuts:
            rows = torch.nonzero(bucket == c).flatten()
            if rows.numel() == 0:  # no candidate shares this cut (then ref_kv may not exist)
                continue
            past = None if c == 0 else tuple((k[:, :, : n_before + c], v[:, :, : n_before + c]) for k, v in ref_kv)
            for s in range(0, rows.shape[0], self.batch_size):
                idx = rows[s : s + self.batch_size]
                ids = torch.cat([prompts[idx, c:], tail.unsqueeze(0).expand(idx.shape[0], -1)], dim=1)
                out[idx.cpu()] = self._loss(idx.shape[0], length - c, ids, None, past).float().cpu()
        return out

    def loss_and_grad(self, prompt: torch.Tensor) -> tuple[float, torch.Tensor]:
        prompt = _check(prompt.unsqueeze(0), self.vocab_size)[0].to(self.device)
        rest = self.model.get_input_embeddings()(torch.cat([self.after, self.target_ids])).unsqueeze(0)
        return one_hot_grad(self.model, prompt,
                            lambda embeds: self._loss(1, prompt.shape[0], None, torch.cat([embeds, rest], dim=1))[0])

    def metrics(self, prompt: torch.Tensor) -> Mapping[str, float]:
        loss = float(self.losses(prompt.unsqueeze(0))[0])
        return {"loss": loss, "target_prob": float(torch.exp(torch.tensor(-loss)))}


class OutputMatchObjective:
    """KL(steered || prompted) of next-token distributions at the aligned positions (see module docstring)."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, layout: ChatLayout,
                 vector: torch.Tensor, layer: int, context_ids: Sequence[Sequence[int]], *,
                 batch_size: int = 8) -> None:
        check_layer(model, layer)
        if vector.dim() != 1 or vector.shape[0] != model.config.hidden_size:
            raise UserInputError(f"vector: expected shape ({model.config.hidden_size},), got {tuple(vector.shape)}")
        if not context_ids or any(len(c) == 0 for c in context_ids):
            raise UserInputError("contexts: expected at least one non-empty context")
        self.model, self.layout, self.batch_size = model, layout, batch_size
        self.last = num_layers(model) - 1
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        self.segs = [segments(layout, c) for c in context_ids]
        self.steered: list[torch.Tensor] = []  # per context: (n_post_aligned, V) log-probs
        self.pre_kv: list[KV] = []
        constant, self.n_total = 0.0, sum(s.n_aligned for s in self.segs)
        with torch.no_grad():
            for seg, ctx in zip(self.segs, context_ids, strict=True):
                placed = layout.place(None, ctx)
                ids = torch.tensor([placed.ids], device=self.device)
                with steer(model, {layer: vector.to(self.device)}, 1.0):
                    steered = F.log_softmax(model(ids).logits[0, list(placed.aligned)].float(), dim=-1)
                if seg.n_pre_aligned:
                    base = F.log_softmax(model(ids).logits[0, list(placed.aligned[: seg.n_pre_aligned])].float(), -1)
                    pre = steered[: seg.n_pre_aligned]
                    constant += float((pre.exp() * (pre - base)).sum())
                self.steered.append(steered[seg.n_pre_aligned :])
                pre_ids = torch.tensor([seg.pre], device=self.device)
                self.pre_kv.append(run_to_layer(model, self.last, input_ids=pre_ids)[1])
        self.constant = constant

    def _kl_sum(self, k: int, batch: int, input_ids: torch.Tensor | None, embeds: torch.Tensor | None) -> torch.Tensor:
        """Sum over context k's post-aligned positions of KL(steered || prompted), (B,)."""
        seg = self.segs[k]
        _, kv = run_to_layer(self.model, self.last, input_ids=input_ids, inputs_embeds=embeds,
                             past=expand_kv(self.pre_kv[k], batch))
        post = torch.tensor([seg.post], device=self.device).expand(batch, -1)
        hidden, _ = run_to_layer(self.model, self.last, input_ids=post, past=kv)
        logp = F.log_softmax(final_logits(self.model, hidden[:, list(seg.post_aligned)]), dim=-1)
        target = self.steered[k].unsqueeze(0)
        return (target.exp() * (target - logp)).sum(dim=(1, 2))

    def _total(self, batch: int, prompts: torch.Tensor | None, embeds: torch.Tensor | None) -> torch.Tensor:
        kl = sum(self._kl_sum(k, batch, prompts, embeds) for k in range(len(self.segs)))
        return (kl + self.constant) / self.n_total  # type: ignore[operator]

    @torch.no_grad()
    def losses(self, prompts: torch.Tensor) -> torch.Tensor:
        prompts = _check(prompts, self.vocab_size).to(self.device)
        out = [self._total(c.shape[0], c, None).cpu() for c in prompts.split(self.batch_size)]
        return torch.cat(out)

    def loss_and_grad(self, prompt: torch.Tensor) -> tuple[float, torch.Tensor]:
        prompt = _check(prompt.unsqueeze(0), self.vocab_size)[0].to(self.device)
        return one_hot_grad(self.model, prompt, lambda embeds: self._total(1, None, embeds)[0])

    def metrics(self, prompt: torch.Tensor) -> Mapping[str, float]:
        return {"kl": float(self.losses(prompt.unsqueeze(0))[0])}
