"""Behavior objective: make the prompted model do what the steered model does, along the steered model's own text.

For contexts c_k with steered continuations y_k (`realize.data.steered.SteeredContext`: computed once per vector),
a candidate prompt p is placed in each turn and y_k is teacher-forced after it:

    loss(p) = 1/N * sum_k sum_t KL( S_k,t || P_k,t )      N = sum_k |y_k|

S_k,t = log P_steered(. | x_k, y_k,<t) (fixed), P_k,t = log P_prompted(. | place(p, c_k), y_k,<t). 0 = the prompt
reproduces every steered next-token distribution.

Speed, as in the activation objective (`realize.attacks.objectives`): the template before the prompt runs once per
group of contexts sharing it, each candidate's prompt tokens run once for all K contexts, and the K post segments
(separator, context, assistant header, y[:-1]) are packed into one row per candidate. The LM head runs only at the
N scored positions. Candidates are scored `batch_size` at a time (x K contexts); the batch halves on out-of-memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from realize.attacks.base import map_in_batches
from realize.attacks.content import ContentLexicon
from realize.attacks.embeddings import one_hot_grad
from realize.attacks.prompt_cache import KV, expand_kv, packed_mask, prefix_groups, run_to_layer
from realize.attacks.text_objectives import final_logits
from realize.data.activations import num_layers
from realize.data.chat import ChatLayout
from realize.data.errors import UserInputError
from realize.data.steered import SteeredContext

__all__ = ["BehaviorObjective"]


@dataclass(frozen=True)
class _Group:
    contexts: tuple[int, ...]
    pre_kv: KV
    post_ids: torch.Tensor  # (T,) packed post segments (each: post + y[:-1])
    offsets: torch.Tensor  # (T,) position of each token inside its segment
    lengths: tuple[int, ...]
    scored: torch.Tensor  # (N_g,) indices into the packed row whose logits predict y tokens
    owner: torch.Tensor  # (N_g,) which of the group's contexts each scored position belongs to
    steered: torch.Tensor  # (N_g, V) steered log-probs at those positions


class BehaviorObjective:
    """KL(steered || prompted) along steered continuations (see module docstring)."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, layout: ChatLayout,
                 contexts: Sequence[SteeredContext], *, batch_size: int = 8) -> None:
        if not contexts or any(not c.context_ids or not c.continuation for c in contexts):
            raise UserInputError("contexts: expected at least one context with a non-empty steered continuation")
        self.model, self.tokenizer, self.layout = model, tokenizer, layout
        self.last = num_layers(model) - 1
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        self.context_ids = tuple(c.context_ids for c in contexts)
        self.contexts = tuple(contexts)
        self.n_scored = sum(len(c.continuation) for c in contexts)
        self._batch = batch_size
        self._groups = self._build_groups()

    @torch.no_grad()
    def _build_groups(self) -> tuple[_Group, ...]:
        groups = []
        for ks, segs, pre_kv in prefix_groups(self.model, self.layout, self.context_ids, self.last, self.device):
            ids: list[int] = []
            offsets: list[int] = []
            scored: list[int] = []
            owner: list[int] = []
            lengths: list[int] = []
            for i, (k, seg) in enumerate(zip(ks, segs, strict=True)):
                y = self.contexts[k].continuation
                segment = list(seg.post) + list(y[:-1])
                start = len(ids)
                ids.extend(segment)
                offsets.extend(range(len(segment)))
                lengths.append(len(segment))
                first = start + len(seg.post) - 1  # the post's last token predicts y_0
                scored.extend(range(first, first + len(y)))
                owner.extend([i] * len(y))
            steered = torch.cat([self.contexts[k].steered for k in ks]).to(self.device)
            groups.append(_Group(tuple(ks), pre_kv, torch.tensor(ids, device=self.device),
                                 torch.tensor(offsets, device=self.device), tuple(lengths),
                                 torch.tensor(scored, device=self.device), torch.tensor(owner, device=self.device),
                                 steered))
        return tuple(groups)

    def _group_logprobs(self, group: _Group, prompts: torch.Tensor | None,
                        embeds: torch.Tensor | None) -> torch.Tensor:
        """(B, N_g, V) prompted log-probs at the group's scored positions."""
        batch = prompts.shape[0] if prompts is not None else embeds.shape[0]  # type: ignore[union-attr]
        _, kv = run_to_layer(self.model, self.last, input_ids=prompts, inputs_embeds=embeds,
                             past=expand_kv(group.pre_kv, batch))
        past_len = kv[0][0].shape[2]
        mask = packed_mask(past_len, group.lengths, self.dtype, self.device)
        hidden, _ = run_to_layer(self.model, self.last, input_ids=group.post_ids.expand(batch, -1),
                                 attention_mask=mask, position_ids=(group.offsets + past_len).unsqueeze(0), past=kv)
        return torch.log_softmax(final_logits(self.model, hidden[:, group.scored]), dim=-1)

    def _group_kl(self, group: _Group, prompts: torch.Tensor | None, embeds: torch.Tensor | None) -> torch.Tensor:
        """(B, N_g) KL(steered || prompted) at the group's scored positions."""
        logp = self._group_logprobs(group, prompts, embeds)
        target = group.steered.unsqueeze(0)
        return (target.exp() * (target - logp)).sum(-1)

    def _per_context(self, prompts: torch.Tensor | None, embeds: torch.Tensor | None) -> torch.Tensor:
        """(B, K) sum over each context's scored positions of KL(steered || prompted)."""
        batch = prompts.shape[0] if prompts is not None else embeds.shape[0]  # type: ignore[union-attr]
        out = torch.zeros(batch, len(self.contexts), device=self.device)
        for group in self._groups:
            kl = self._group_kl(group, prompts, embeds)  # (B, N_g)
            sums = kl.new_zeros(batch, len(group.contexts)).index_add(1, group.owner, kl)
            out[:, list(group.contexts)] = sums
        return out

    def _check(self, prompts: torch.Tensor) -> torch.Tensor:
        if prompts.dim() != 2 or prompts.shape[1] == 0:
            raise ValueError(f"prompts: expected a (B, L) tensor with L >= 1, got shape {tuple(prompts.shape)}")
        if prompts.min() < 0 or prompts.max() >= self.vocab_size:
            raise ValueError(f"prompts: token ids must lie in 0..{self.vocab_size - 1}")
        return prompts.to(self.device, torch.long)

    @torch.no_grad()
    def per_context_kl(self, prompts: torch.Tensor) -> torch.Tensor:
        """prompts (B, L) -> (B, K) summed KL(steered || prompted) per context, on CPU."""
        out, self._batch = map_in_batches(lambda chunk: self._per_context(chunk, None).cpu(), self._check(prompts),
                                          self._batch)
        return out

    @torch.no_grad()
    def evaluate(self, prompts: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """prompts (B, L) -> (per-context summed KL (B, K), per context k the prompted log-probs of y_k's own tokens
        (B, |y_k|)), on CPU: what recovery and the direction of the effect need, in one pass."""
        prompts = self._check(prompts)
        kl = torch.zeros(prompts.shape[0], len(self.contexts))
        tokens: list[torch.Tensor] = [torch.empty(0)] * len(self.contexts)
        for start in range(0, prompts.shape[0], max(self._batch, 1)):
            chunk = prompts[start : start + max(self._batch, 1)]
            for group in self._groups:
                logp = self._group_logprobs(group, chunk, None)  # (b, N_g, V)
                target = group.steered.unsqueeze(0)
                per_pos = (target.exp() * (target - logp)).sum(-1)
                for i, k in enumerate(group.contexts):
                    rows = (group.owner == i).nonzero().squeeze(1)
                    kl[start : start + chunk.shape[0], k] = per_pos[:, rows].sum(1).cpu()
                    y = torch.tensor(self.contexts[k].continuation, device=self.device)
                    got = logp[:, rows].gather(-1, y.view(1, -1, 1).expand(chunk.shape[0], -1, 1)).squeeze(-1)
                    part = got.cpu()
                    tokens[k] = part if start == 0 else torch.cat([tokens[k], part])
        return kl, tokens

    def losses(self, prompts: torch.Tensor) -> torch.Tensor:
        """prompts (B, L) -> mean KL per scored token (B,), float32 on CPU."""
        return self.per_context_kl(prompts).sum(dim=1) / self.n_scored

    def loss_and_grad(self, prompt: torch.Tensor) -> tuple[float, torch.Tensor]:
        """prompt (L,) -> (loss, d loss / d one-hot (L, V))."""

        def loss(embeds: torch.Tensor) -> torch.Tensor:
            return self._per_context(None, embeds).sum() / self.n_scored

        return one_hot_grad(self.model, self._check(prompt.unsqueeze(0))[0], loss)

    @torch.no_grad()
    def token_gain(self) -> torch.Tensor:
        """(V,) how much probability the steer moves onto each token, averaged over the steered continuations'
        positions: mean_t P_steered(v | x, y_<t) - P_base(v | x, y_<t)."""
        total = sum((c.steered.exp() - c.base.exp()).sum(dim=0) for c in self.contexts)
        return total / self.n_scored  # type: ignore[operator]

    def content_scores(self, prompt: torch.Tensor, lexicon: ContentLexicon) -> torch.Tensor | None:
        """(n,) each lexicon word's `token_gain` at its first token after a space: the words the steered text says
        more than the base text (`attacks.content`). The same for every prompt."""
        gain = self.token_gain()
        return gain[torch.tensor([ids[0] for ids in lexicon.inner_ids], dtype=torch.long)]

    def metrics(self, prompt: torch.Tensor) -> Mapping[str, float]:
        kl = self.per_context_kl(prompt.unsqueeze(0))[0]
        effect = sum(float(c.effect.sum()) for c in self.contexts)
        return {"loss": float(kl.sum()) / self.n_scored, "kl": float(kl.sum()) / self.n_scored,
                "recovery": 1.0 - float(kl.sum()) / effect if effect > 1e-9 else float("nan")}
