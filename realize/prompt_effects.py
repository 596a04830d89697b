"""Each natural prompt's effect on the model's first answer token, cached once per (model, placement, contexts).

The behavior axis retrieves corpus prompts by what they do: the change a prompt makes to the next-token distribution
at the first answer position, P_prompted(. | x) - P_base(. | x) averaged over contexts, compared (cosine) with the
change a vector makes there. The prompts' side does not depend on the vector, so it is computed once and cached (a
safetensors file under `$REALIZE_CACHE/corpus_shifts/`). Each prompt keeps its `TOP_K` largest changes (by
magnitude; the rest of a 49k-token distribution's change is ~0), which makes the cache small enough to ship with the
package for the demo's contexts; every target ranks the corpus with one gather and one product.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from realize.corpus_shifts import CorpusShifts
from realize.data.atomic import atomic_output
from realize.data.chat import ChatLayout, encode
from realize.data.models import LoadedModel
from realize.data.steered import forced_logprobs

logger = logging.getLogger(__name__)
EFFECTS_VERSION = "2"  # 2: sparse (top-k) effects
TOP_K = 256  # largest first-answer probability changes kept per prompt


@torch.no_grad()
def first_answer_effects(lm: LoadedModel, layout: ChatLayout, prompts: Sequence[str], contexts: Sequence[str],
                         *, batch_size: int = 32) -> torch.Tensor:
    """(n, V) mean over `contexts` of P_prompted(. | first answer position) - P_base(. | same), per prompt."""
    tok = lm.tokenizer
    context_ids = [encode(tok, c) for c in contexts]
    dummy = [tok.eos_token_id or 0]  # the position that predicts the first answer token does not see it
    base = forced_logprobs(lm, [layout.place(None, c).ids for c in context_ids], [dummy] * len(context_ids))
    base_p = torch.stack([b[0].exp() for b in base]).mean(0)
    out = torch.zeros(len(prompts), base_p.shape[0])
    k = len(context_ids)
    for start in range(0, len(prompts), 32):
        chunk = [encode(tok, p) for p in prompts[start : start + 32]]
        rows = forced_logprobs(lm, [layout.place(ids, c).ids for ids in chunk for c in context_ids],
                               [dummy] * (len(chunk) * k), batch_size)
        probs = torch.stack([r[0].exp() for r in rows]).view(len(chunk), k, -1).mean(1)
        out[start : start + len(chunk)] = probs - base_p
    return out


@dataclass(frozen=True)
class PromptEffects:
    prompts: tuple[str, ...]  # the retrieval corpus (natural prompts)
    clusters: tuple[str, ...]
    indices: torch.Tensor  # (n, k) long: the tokens of each prompt's largest first-answer probability changes
    values: torch.Tensor  # (n, k) float: those changes

    @classmethod
    def of(cls, prompts: tuple[str, ...], clusters: tuple[str, ...], dense: torch.Tensor,
           top_k: int = TOP_K) -> PromptEffects:
        """From dense changes (n, V): each row's `top_k` largest by magnitude."""
        indices = dense.float().abs().topk(min(top_k, dense.shape[1]), dim=1).indices
        return cls(prompts, clusters, indices, dense.float().gather(1, indices))

    def cosine(self, effect: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """(len(rows),) cosine of each row's change with a dense change `effect` (V,)."""
        values = self.values[rows].float()
        dots = (values * effect.float()[self.indices[rows]]).sum(dim=1)
        return dots / (values.norm(dim=1) * effect.float().norm()).clamp_min(1e-12)


def prompt_effects(lm: LoadedModel, layout: ChatLayout, corpus: CorpusShifts, contexts: Sequence[str], *,
                   cache_dir: Path | None, fingerprint: str) -> PromptEffects:
    """The retrieval corpus's first-answer effects on `contexts`, from the cache when present."""
    rows, prompts = corpus.select("natural_prompts")
    clusters = tuple(corpus.clusters[i] for i in rows)
    key = json.dumps({"version": EFFECTS_VERSION, "top_k": TOP_K, "model": fingerprint, "placement": layout.placement,
                      "layout": [layout.head, layout.tail, layout.sep, layout.sys_head, layout.sys_tail],
                      "contexts": list(contexts), "prompts": prompts}, sort_keys=True)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"effects-{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"
        if path.is_file():
            try:
                tensors = load_file(str(path))
                return PromptEffects(tuple(prompts), clusters, tensors["indices"].long(), tensors["values"].float())
            except (OSError, ValueError, KeyError, RuntimeError) as err:
                logger.warning("%s: unreadable prompt-effect cache (%s); recomputing", path, err)
    logger.info("computing the first-answer effects of %d corpus prompts (once per model and contexts)",
                len(prompts))
    effects = PromptEffects.of(tuple(prompts), clusters, first_answer_effects(lm, layout, prompts, contexts))
    if path is not None:
        with atomic_output(path) as tmp:
            save_file({"indices": effects.indices.int().contiguous(), "values": effects.values.contiguous()},
                      str(tmp))
    return effects
