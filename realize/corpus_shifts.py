"""The shifts of every shipped prompt at one layer, computed once per (model, layer, placement, contexts) and cached.

None of this depends on the target, so an audit computes it once and every target reuses it:

- retrieval ranks all natural prompts for a target with one matrix product (`retrieval_losses`) instead of one
  forward pass per prompt and target;
- the magnitude reference of the layer (`natural_norms_at`: per-position shift norms of natural prompts, g removed,
  on the fixed magnitude contexts; cached the same way);
- the nulls are drawn inside their principal subspace (`realize.targets.natural_nulls`);
- positive controls take their targets from the held-out `positive_prompts` rows.

`CorpusShifts` holds, per prompt, its corpus name, its paraphrase cluster and its mean shift over the optimization
contexts (the search's own contexts: these numbers choose candidates, so nothing reported comes from them).
The cache file is a safetensors file under `$REALIZE_CACHE/corpus_shifts/`, keyed by the model fingerprint, layer,
placement, the contexts, the corpora's contents and `VERSION`; it is written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from realize.attacks.objectives import ActivationObjectiveConfig, ActivationShiftObjective, activation_loss
from realize.data.atomic import atomic_output, write_text_atomic
from realize.data.chat import ChatLayout, encode
from realize.data.corpora import load_clustered
from realize.data.models import LoadedModel
from realize.data.shift import project_out
from realize.magnitude import NaturalNorms

logger = logging.getLogger(__name__)
VERSION = "1"  # bump when what is cached, or how, changes
CORPORA = ("natural_prompts", "positive_prompts", "generic_prompts")  # what the cache holds


@dataclass(frozen=True)
class CorpusShifts:
    """Mean shifts (over the optimization contexts) of every shipped prompt at one layer."""

    prompts: tuple[str, ...]
    clusters: tuple[str, ...]  # paraphrase cluster of each prompt ("" when the corpus has none)
    corpora: tuple[str, ...]  # which corpus each prompt comes from
    shifts: torch.Tensor  # (n, d) float32

    def select(self, corpus: str) -> tuple[list[int], list[str]]:
        """Row indices and prompts of one corpus."""
        rows = [i for i, c in enumerate(self.corpora) if c == corpus]
        return rows, [self.prompts[i] for i in rows]


def corpora_digest() -> str:
    """Hash of the contents of every corpus the cache and the audit read (contexts included)."""
    from realize.data.corpora import load_corpus

    digest = hashlib.sha256()
    for name in (*CORPORA, "contexts"):
        digest.update(json.dumps([name, load_corpus(name)]).encode())  # type: ignore[arg-type]
    return digest.hexdigest()[:16]


def _rows() -> tuple[list[str], list[str], list[str]]:
    from realize.data.corpora import load_corpus

    prompts, clusters, corpora = [], [], []
    for name in CORPORA:
        if name == "generic_prompts":
            items = [(p, "") for p in load_corpus(name)]
        else:
            items = [(c.prompt, c.cluster) for c in load_clustered(name)]  # type: ignore[arg-type]
        for prompt, cluster in items:
            prompts.append(prompt)
            clusters.append(cluster)
            corpora.append(name)
    return prompts, clusters, corpora


@torch.no_grad()
def mean_shifts_at(lm: LoadedModel, layout: ChatLayout, layers: Sequence[int], prompts: Sequence[str],
                   contexts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> dict[int, torch.Tensor]:
    """Per layer, (n, d) mean shift (over `contexts`, each context's aligned positions averaged first) of each prompt,
    computed with the objective's early-exit, KV-reusing forward (all layers at once), prompts batched by length."""
    tok = lm.tokenizer
    probe = ActivationShiftObjective(lm.model, tok, layout, {i: torch.ones(lm.hidden_size) for i in layers}, None,
                                     [encode(tok, c) for c in contexts], config=ActivationObjectiveConfig())
    ids = [encode(tok, p) for p in prompts]
    if any(not row for row in ids):
        raise ValueError("prompts: every prompt must encode to at least one token")
    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(ids):
        by_length.setdefault(len(row), []).append(i)
    out = {i: torch.zeros(len(prompts), lm.hidden_size) for i in layers}
    chunks = [rows[s : s + batch_size] for rows in by_length.values() for s in range(0, len(rows), batch_size)]
    for chunk in tqdm(chunks, desc="corpus shifts", disable=not show_progress):
        for layer, per_context in probe.per_context_shifts_by_layer(torch.tensor([ids[i] for i in chunk])).items():
            out[layer][chunk] = per_context.mean(dim=1).cpu()  # (B, K, d) -> (B, d)
    return out


def mean_shifts(lm: LoadedModel, layout: ChatLayout, layer: int, prompts: Sequence[str], contexts: Sequence[str],
                *, batch_size: int = 64, show_progress: bool = False) -> torch.Tensor:
    """(n, d) mean shift of each prompt at one layer (see `mean_shifts_at`)."""
    return mean_shifts_at(lm, layout, [layer], prompts, contexts, batch_size=batch_size,
                          show_progress=show_progress)[layer]


NATURAL_NORM_PROMPTS = 128  # natural prompts (a fixed draw) whose per-position shift norms are the magnitude reference


@torch.no_grad()
def natural_norms_at(lm: LoadedModel, layout: ChatLayout, layers: Sequence[int], contexts: Sequence[str],
                     generics: Mapping[int, torch.Tensor], *, fingerprint: str, cache_dir: Path | None,
                     batch_size: int = 32) -> dict[int, NaturalNorms]:
    """Per layer, the natural magnitude reference (`realize.magnitude`): the norms of `NATURAL_NORM_PROMPTS` natural
    prompts' shifts at every aligned position of `contexts`, with that layer's g (`generics`) projected out. Cached
    per (model, layer, placement, contexts) as a small JSON file."""
    rows, prompts = _natural_sample()
    out: dict[int, NaturalNorms] = {}
    paths: dict[int, Path | None] = {}
    for layer in layers:
        key = json.dumps({"version": VERSION, "what": "natural norms", "model": fingerprint, "layer": layer,
                          "placement": layout.placement, "contexts": list(contexts), "prompts": prompts},
                         sort_keys=True)
        paths[layer] = None if cache_dir is None else \
            Path(cache_dir) / f"norms-L{layer}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
        path = paths[layer]
        if path is not None and path.is_file():
            try:
                out[layer] = NaturalNorms(**json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError) as err:
                logger.warning("%s: unreadable natural-norm cache (%s); recomputing", path, err)
    missing = [layer for layer in layers if layer not in out]
    if missing:
        tok = lm.tokenizer
        probe = ActivationShiftObjective(lm.model, tok, layout, {i: torch.ones(lm.hidden_size) for i in missing},
                                         None, [encode(tok, c) for c in contexts],
                                         config=ActivationObjectiveConfig())
        norms: dict[int, list[torch.Tensor]] = {i: [] for i in missing}
        by_length: dict[int, list[list[int]]] = {}
        for prompt in prompts:
            ids = encode(tok, prompt)
            by_length.setdefault(len(ids), []).append(ids)
        for group in by_length.values():
            for start in range(0, len(group), batch_size):
                deltas = probe.position_deltas_by_layer(torch.tensor(group[start : start + batch_size]))
                for i, delta in deltas.items():
                    norms[i].append(project_out(delta.cpu(), generics[i].float()).norm(dim=-1).reshape(-1))
        for layer in missing:
            out[layer] = NaturalNorms.of(torch.cat(norms[layer]))
            path = paths[layer]
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(path, json.dumps(dataclasses.asdict(out[layer])))
    return {layer: out[layer] for layer in layers}


def _natural_sample() -> tuple[list[int], list[str]]:
    """A fixed draw of `NATURAL_NORM_PROMPTS` rows of the natural prompt corpus (all when it is smaller)."""
    from realize.data.corpora import load_clustered

    prompts = [c.prompt for c in load_clustered("natural_prompts")]
    rows = sorted(random.Random("natural norms").sample(range(len(prompts)), min(NATURAL_NORM_PROMPTS,
                                                                                  len(prompts))))
    return rows, [prompts[i] for i in rows]


def _cache_path(cache_dir: Path | None, layer: int, key: str) -> Path | None:
    return None if cache_dir is None else Path(cache_dir) / f"L{layer}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"


def corpus_shifts_at(lm: LoadedModel, layout: ChatLayout, layers: Sequence[int], contexts: Sequence[str], *,
                     fingerprint: str, cache_dir: Path | None,
                     show_progress: bool = False) -> dict[int, CorpusShifts]:
    """Per layer, the shifts of every shipped prompt on `contexts`: from the cache where present (one file per layer,
    so single- and multi-layer audits share them), the missing layers computed in one pass."""
    prompts, clusters, corpora = _rows()
    out: dict[int, CorpusShifts] = {}
    keys: dict[int, str] = {}
    for layer in layers:
        keys[layer] = json.dumps({"version": VERSION, "model": fingerprint, "layer": layer,
                                  "placement": layout.placement,
                                  "layout": [layout.head, layout.tail, layout.sep, layout.sys_head, layout.sys_tail],
                                  "contexts": list(contexts), "prompts": prompts}, sort_keys=True)
        path = _cache_path(cache_dir, layer, keys[layer])
        if path is not None and path.is_file():
            try:
                shifts = load_file(str(path))["shifts"]
                if shifts.shape == (len(prompts), lm.hidden_size):
                    out[layer] = CorpusShifts(tuple(prompts), tuple(clusters), tuple(corpora), shifts)
            except (OSError, ValueError, KeyError, RuntimeError) as err:  # unreadable: recompute
                logger.warning("%s: unreadable corpus-shift cache (%s); recomputing", path, err)
    missing = [layer for layer in layers if layer not in out]
    if missing:
        logger.info("computing the shifts of %d corpus prompts at layer(s) %s (once per model, layer and contexts)",
                    len(prompts), missing)
        computed = mean_shifts_at(lm, layout, missing, prompts, contexts, show_progress=show_progress)
        for layer, shifts in computed.items():
            path = _cache_path(cache_dir, layer, keys[layer])
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_output(path) as tmp:
                    save_file({"shifts": shifts.contiguous()}, str(tmp), metadata={"key": keys[layer][:2000]})
            out[layer] = CorpusShifts(tuple(prompts), tuple(clusters), tuple(corpora), shifts)
    return {layer: out[layer] for layer in layers}


def corpus_shifts(lm: LoadedModel, layout: ChatLayout, layer: int, contexts: Sequence[str], *, fingerprint: str,
                  cache_dir: Path | None, show_progress: bool = False) -> CorpusShifts:
    """The shifts of every shipped prompt on `contexts` at `layer`, from the cache when present."""
    return corpus_shifts_at(lm, layout, [layer], contexts, fingerprint=fingerprint, cache_dir=cache_dir,
                            show_progress=show_progress)[layer]


def retrieval_losses(shifts: torch.Tensor, target: torch.Tensor, generic: torch.Tensor | None,
                     config: ActivationObjectiveConfig = ActivationObjectiveConfig()) -> torch.Tensor:
    """The activation objective's loss (without the per-position term) of prompts whose mean shifts are `shifts`
    (n, d), for `target` (d,): what `natural_retrieval` would compute, as one matrix product."""
    if config.consistency > 0:
        raise ValueError("config.consistency: retrieval from cached mean shifts has no per-position term")
    return activation_loss(shifts.float(), torch.zeros(shifts.shape[0]), target.float(),
                           None if generic is None else generic.float(), config)
