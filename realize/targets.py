"""Work items of an audit: each vector's layer, and the calibration controls of that layer.

Controls (see `realize.verdict` for how they decide):

- `null`: random directions inside the layer's natural subspace, the span of the principal directions holding 99 %
  of the natural prompts' mean-shift variance (`natural_nulls`), scaled to the norm bin of the vectors they
  calibrate. Natural shifts concentrate in that subspace; isotropic directions do not, which makes them easy to
  beat. Drawing with the shifts' covariance instead makes random mixtures of natural shifts, which prompts partly
  produce by construction (see `natural_nulls` and the README's "How this verdict could fool you").
- `null-isotropic`: isotropic random directions at the same norm, reported as a labelled reference, never deciding.
- `positive`: mean shifts of held-out natural prompts (`positive_prompts` corpus). Their clusters are absent from
  the retrieval corpus and from realism training by construction (`realize.data.corpora`); retrieval excludes them
  again, and also every corpus cluster holding a prompt whose shift lies near the positive's (`near_clusters`:
  same-template near-duplicates that ids alone cannot catch), so a positive is realized by search, not by finding
  a paraphrase. Activation axis.
- `behavior-positive`: steers distilled from held-out prompts (`realize.distill`) at the same layers as the steers
  they calibrate (several layers: one direction per layer, trained jointly): steering with them reproduces the
  prompt's behavior, so a prompt exists by construction. The prompts are those whose own first-answer effect is
  nearest the steer's effect bin (`realize.effects`). Behavior axis. The steer is trained when the item is audited
  (its id hashes the prompt, the layers, the effect bin and the configuration, not the trained bytes).

Axes: a vector is measured on every axis of the audit; every control on one. Activation nulls sit at the vector's
norm bins; behavior nulls are the same directions rescaled to the vector's effect bin (effect-matched), because
behavior recovery depends on how hard a steer pushes.

Several layers: a steer with directions at several layers (repeng / CAA / llama.cpp control vectors) is one target.
Its nulls are random directions at every layer, each in that layer's natural subspace and at that layer's
norm; its positives are natural prompts' shifts at the same layers.

Norm bins: nulls depend on the target norm only through the search's norm term beta * (|M| / |t| - 1)^2 (the
specific cosine ignores scale), so vectors share nulls per bin of 2^(1/2): a null is drawn at most 2^(1/4) = 1.19x
from the vector's norm, which moves that term by under 0.004 (beta 0.1) against cosine terms of order 1. Every
(layer, bin, kind, index) seeds its own generator: no two bins share null directions.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from realize.config import AuditConfig
from realize.corpus_shifts import CorpusShifts
from realize.data.shift import project_out
from realize.data.vectors import SteeringVector
from realize.effects import bin_effect
from realize.evidence import Axis, Kind
from realize.identity import file_sha256

BINS_PER_OCTAVE = 2


@dataclass(frozen=True)
class Target:
    """One thing to audit: a vector (at one layer or several), or a control."""

    vector_id: str
    name: str
    source: str
    kind: Kind
    axes: tuple[Axis, ...]  # what to measure
    scale: float
    method: str
    directions: dict[int, torch.Tensor]  # layer -> v (d,); the steer adds scale * v there (behavior positives: zeros)
    exclude_clusters: tuple[str, ...] = ()  # clusters retrieval must not return (a positive's own, and its near ones)
    prompt: str = ""  # positives: the natural prompt behind the target
    nearest_corpus: tuple[str, float] | None = None  # positives: the closest retrieval prompt kept, its specific cos
    source_sha256: str | None = None  # vectors: the digest of the file the steer was read from
    effect: float | None = None  # behavior: the first-answer effect (vectors: their own; positives: their prompt's)
    effect_bin: int | None = None  # behavior: the effect bin the item is matched to (`realize.effects`)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted(self.directions))

    @property
    def layer(self) -> int:
        """The deepest layer."""
        return self.layers[-1]

    @property
    def goal(self) -> dict[int, torch.Tensor]:
        return {i: self.scale * self.directions[i].float() for i in self.layers}


_OWN_AXES: dict[str, tuple[Axis, ...]] = {
    "vector": ("activation", "behavior"), "null": ("activation", "behavior"), "null-isotropic": ("activation",),
    "positive": ("activation",), "behavior-positive": ("behavior",)}  # a null item measures one axis (its `axes`)
_BEHAVIOR_FIELDS = ("behavior_tokens", "behavior_contexts", "behavior_test_contexts")


def own_key(kind: str, key: Mapping[str, Any], axes: Sequence[Axis] | None = None) -> dict[str, Any]:
    """What an item of `kind` depends on: the audit's key without the settings that cannot change its result (the
    axes it does not run, their settings, distillation for anything but behavior positives, the on-manifold share
    for controls), so an activation positive of a both-axes audit is the same item as in an activation-only one."""
    out = dict(key)
    if "axes" not in out:  # a key that is not an audit configuration's (tests, hand-made keys)
        return out
    axes = tuple(a for a in (_OWN_AXES[kind] if axes is None else axes) if a in out["axes"])
    out["axes"] = list(axes)
    if "behavior" not in axes:
        for name in _BEHAVIOR_FIELDS:
            out.pop(name, None)
    if kind != "behavior-positive":
        out.pop("distill_steps", None)
    if kind != "vector":  # controls are the same items whatever prompts the user suspects
        out.pop("manifold", None)
        out.pop("hypotheses", None)
    return out


def item_id(kind: str, directions: torch.Tensor | Mapping[int, torch.Tensor], layer: int | None, scale: float,
            key: Mapping[str, Any], axes: Sequence[Axis] | None = None) -> str:
    """Stable id of a work item: hash of the vector bytes, its layers/scale, and what its result depends on."""
    if isinstance(directions, torch.Tensor):
        assert layer is not None, "a single direction needs its layer"
        directions = {layer: directions}
    digest = hashlib.sha256()
    key = own_key(kind, key, axes)
    for i in sorted(directions):
        digest.update(directions[i].detach().to(torch.float32).contiguous().numpy().tobytes())
    layers = sorted(directions)
    digest.update(json.dumps({"kind": kind, "layer": layers[0] if len(layers) == 1 else layers, "scale": scale, **key},
                             sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def norm_bin(norm: float) -> int:
    """The bin of a target norm (2^(1/2) wide, centred on powers of sqrt(2))."""
    if not norm > 0 or not math.isfinite(norm):
        raise ValueError(f"norm: expected a positive finite target norm, got {norm}")
    return round(math.log2(norm) * BINS_PER_OCTAVE)


def bin_norm(index: int) -> float:
    return 2.0 ** (index / BINS_PER_OCTAVE)


def _axes(kind: Kind, config: AuditConfig) -> tuple[Axis, ...]:
    return tuple(a for a in _OWN_AXES[kind] if a in config.axes)


def norm_bins(goal: Mapping[int, torch.Tensor]) -> tuple[tuple[int, int], ...]:
    """((layer, norm bin), ...) of a goal {layer: a*v}: targets with the same bins share nulls."""
    return tuple((i, norm_bin(float(goal[i].norm()))) for i in sorted(goal))


def vector_targets(vectors: Sequence[SteeringVector], key: Mapping[str, Any], config: AuditConfig) -> list[Target]:
    """One target per vector (all of its layers: a multi-layer steer is one target). Every vector must carry a scale
    (loaders fill it from the `scale` argument)."""
    targets = []
    for i, vector in enumerate(vectors):
        directions = {layer: t.float() for layer, t in vector.directions.items()}
        if vector.scale is None:
            raise ValueError(f"vectors[{i}] ({vector.name or vector.source or 'unnamed'}): no scale; give the "
                             "coefficient a (steering adds a*v)")
        scale = float(vector.scale)
        targets.append(Target(item_id("vector", directions, None, scale, key), vector.name or "vector",
                              vector.source or "", "vector", _axes("vector", config), scale,
                              vector.method or "unknown", directions,
                              source_sha256=file_sha256(vector.source) if vector.source else None))
    return targets


def _generator(seed: int, *parts: object) -> torch.Generator:
    digest = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


NULL_SUBSPACE_ENERGY = 0.99  # nulls live in the span of the top principal components holding this share of energy


def natural_subspace(shifts: torch.Tensor, energy: float = NULL_SUBSPACE_ENERGY) -> torch.Tensor:
    """(k, d) orthonormal rows: the fewest principal directions of the rows of `shifts` (n, d), centered, that hold
    `energy` of their variance (k = 130 of 576 at SmolLM2 layer 7 for 0.99)."""
    if shifts.shape[0] < 2:
        raise ValueError("shifts: the natural subspace needs at least two natural shifts")
    centered = shifts.double() - shifts.double().mean(dim=0)
    _, values, basis = torch.linalg.svd(centered, full_matrices=False)
    share = (values**2).cumsum(0) / (values**2).sum()
    k = int((share < energy).sum()) + 1
    return basis[:k]


def natural_nulls(shifts: torch.Tensor, count: int, norm: float, generator: torch.Generator) -> torch.Tensor:
    """(count, d) random directions uniform on the sphere of the natural subspace of `shifts` (n, d)
    (`natural_subspace`), each scaled to `norm`. Inside the span natural shifts use, but not weighted by their
    spectrum: a Gaussian with the shifts' covariance is a random *mixture of natural shifts*, dominated by a few
    modes, which prompts partly produce by construction (measured: retrieval alone reaches specific cos 0.60 on such
    draws at SmolLM2 layer 7, 0.78 on held-out natural shifts, 0.19 on these nulls, 0.10 on isotropic ones)."""
    return subspace_nulls(natural_subspace(shifts), count, norm, generator)


def subspace_nulls(basis: torch.Tensor, count: int, norm: float, generator: torch.Generator) -> torch.Tensor:
    """(count, d) directions uniform on the sphere of the span of `basis` (k, d) orthonormal rows, at `norm`."""
    weights = torch.randn(count, basis.shape[0], generator=generator, dtype=torch.float64)
    draws = weights @ basis
    return (draws / draws.norm(dim=1, keepdim=True) * norm).float()


def isotropic_nulls(dim: int, count: int, norm: float, generator: torch.Generator) -> torch.Tensor:
    draws = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    return (draws / draws.norm(dim=1, keepdim=True) * norm).float()


def null_targets(corpora: Mapping[int, CorpusShifts], bins: Sequence[tuple[int, int]], config: AuditConfig,
                 key: Mapping[str, Any], *, axis: Axis = "activation", effect_bin: int | None = None) -> list[Target]:
    """The nulls of one set of (layer, norm bin), on one axis: `n_null` natural-distribution ones (and, on the
    activation axis, `n_isotropic` isotropic ones); at every layer a direction drawn for that layer at its bin's norm.
    Behavior nulls (`effect_bin` given) use the same directions and are rescaled, when audited, to the bin's
    first-answer effect (`realize.effects.matched_scale`). Null j is the same whatever the count, so raising n_null
    reuses the finished ones."""
    label_bins = ",".join(f"L{i}:{bin_norm(b):.3g}" for i, b in bins)
    subspaces: dict[int, torch.Tensor] = {}  # one SVD per layer, not one per null
    if config.n_null:
        for layer, _ in bins:
            subspaces[layer] = natural_subspace(corpora[layer].shifts[corpora[layer].select("natural_prompts")[0]])
    targets = []
    kinds: tuple[tuple[Kind, int], ...] = (("null", config.n_null or 0),)
    if axis == "activation":
        kinds += (("null-isotropic", config.n_isotropic or 0),)
    tag = "" if effect_bin is None else f".E{bin_effect(effect_bin):.3g}"
    item_key = dict(key) if effect_bin is None else {**key, "effect_bin": effect_bin}
    for kind, count in kinds:
        if axis not in config.axes:
            break
        for j in range(count):
            directions = {}
            for layer, bin_index in bins:
                generator = _generator(config.seed, "null", kind, layer, bin_index, j, [list(b) for b in bins])
                if kind == "null":
                    directions[layer] = subspace_nulls(subspaces[layer], 1, bin_norm(bin_index), generator)[0]
                else:
                    dim = corpora[layer].shifts.shape[1]
                    directions[layer] = isotropic_nulls(dim, 1, bin_norm(bin_index), generator)[0]
            label = "natural subspace" if kind == "null" else "isotropic"
            targets.append(Target(item_id(kind, directions, None, 1.0, item_key, (axis,)),
                                  f"{kind}.{label_bins}{tag}.{j}", f"random direction ({label}), norms {label_bins}"
                                  + ("" if effect_bin is None else f", effect matched to {bin_effect(effect_bin):.3g}"),
                                  kind, (axis,), 1.0, "random", directions, effect_bin=effect_bin,
                                  effect=None if effect_bin is None else bin_effect(effect_bin)))
    return targets


NEAR_SPECIFIC_COS = 0.8  # a retrieval prompt whose shift lies this close to a positive's is left out with its cluster


def near_clusters(corpora: Mapping[int, CorpusShifts], generics: Mapping[int, torch.Tensor], row: int,
                  threshold: float = NEAR_SPECIFIC_COS) -> tuple[tuple[str, ...], tuple[str, float] | None]:
    """The retrieval clusters holding a prompt whose shift has specific cos (g removed, mean over the layers) >=
    `threshold` with the shift of corpus row `row`; and the closest retrieval prompt left after removing them."""
    layers = sorted(corpora)
    corpus = corpora[layers[-1]]
    rows = [i for i, c in enumerate(corpus.corpora) if c == "natural_prompts"]
    if not rows:
        return (), None
    cos = torch.zeros(len(rows))
    for i in layers:
        shifts = project_out(corpora[i].shifts[rows].float(), generics[i].float())
        own = project_out(corpora[i].shifts[row].float(), generics[i].float())
        cos += (shifts @ own) / (shifts.norm(dim=1) * own.norm()).clamp_min(1e-12)
    cos /= len(layers)
    near = tuple(sorted({corpus.clusters[rows[j]] for j in range(len(rows)) if cos[j] >= threshold}))
    kept = [j for j in range(len(rows)) if corpus.clusters[rows[j]] not in set(near)]
    if not kept:
        return near, None
    j = max(kept, key=lambda j: float(cos[j]))
    return near, (corpus.prompts[rows[j]], float(cos[j]))


@dataclass(frozen=True)
class _Positives:
    """The held-out positive prompts at a set of layers, in the audit's seeded order."""

    layers: list[int]
    corpus: CorpusShifts  # at the deepest layer
    rows: list[int]  # corpus rows of the positive prompts
    prompts: list[str]
    order: list[int]  # indices into rows, seeded
    tag: str  # "L3,4,5"

    @classmethod
    def of(cls, corpora: Mapping[int, CorpusShifts], config: AuditConfig) -> _Positives:
        layers = sorted(corpora)
        corpus = corpora[layers[-1]]
        rows, prompts = corpus.select("positive_prompts")
        if not rows:
            raise ValueError("positive_prompts: the corpus is empty")
        order = torch.randperm(len(rows), generator=_generator(config.seed, "positive", layers)).tolist()
        return cls(layers, corpus, rows, prompts, order, "L" + ",".join(map(str, layers)))


def positive_targets(corpora: Mapping[int, CorpusShifts], generics: Mapping[int, torch.Tensor], config: AuditConfig,
                     key: Mapping[str, Any]) -> list[Target]:
    """Activation positives: `n_positive` held-out natural prompts (seeded choice from the positive corpus), each
    target the prompt's mean shift on the optimization contexts at every layer; retrieval excludes the prompt's
    cluster and the clusters near it."""
    if "activation" not in config.axes:
        return []
    p = _Positives.of(corpora, config)
    layers, corpus, tag = p.layers, p.corpus, p.tag
    targets = []
    for j, i in enumerate(p.order[: config.n_positive]):
        row, prompt = p.rows[i], p.prompts[i]
        near, nearest = near_clusters(corpora, generics, row)
        directions = {layer: corpora[layer].shifts[row].clone() for layer in layers}
        targets.append(Target(item_id("positive", directions, None, 1.0, key), f"positive.{tag}.{j}",
                              f"natural prompt: {prompt}", "positive", ("activation",), 1.0, "natural-prompt shift",
                              directions, exclude_clusters=(corpus.clusters[row], *near), prompt=prompt,
                              nearest_corpus=nearest))
    return targets


def behavior_positive_targets(corpora: Mapping[int, CorpusShifts], generics: Mapping[int, torch.Tensor],
                              effects: Mapping[str, float], effect_bin: int, config: AuditConfig,
                              key: Mapping[str, Any]) -> list[Target]:
    """Behavior positives of one effect bin: the `n_positive` held-out prompts whose own first-answer effect
    (`effects`: prompt -> KL(prompted || base)) is nearest the bin's centre (log scale; ties in a seeded order),
    each distilled, when audited, into a steer at every layer (trained jointly)."""
    if "behavior" not in config.axes:
        return []
    p = _Positives.of(corpora, config)
    layers, corpus, tag = p.layers, p.corpus, p.tag
    centre = math.log2(bin_effect(effect_bin))
    ranked = sorted(p.order, key=lambda i: abs(math.log2(max(effects[p.prompts[i]], 1e-6)) - centre))
    targets = []
    for j, i in enumerate(ranked[: config.n_positive]):
        row, prompt = p.rows[i], p.prompts[i]
        near, nearest = near_clusters(corpora, generics, row)
        placeholder = {layer: torch.zeros_like(corpus.shifts[row]) for layer in layers}
        targets.append(Target(item_id("behavior-positive", placeholder, None, 1.0,
                                      {**key, "prompt": prompt, "effect_bin": effect_bin}),
                              f"behavior-positive.{tag}.E{bin_effect(effect_bin):.3g}.{j}", f"distilled from: {prompt}",
                              "behavior-positive", ("behavior",), 1.0, "prompt-distilled vector", placeholder,
                              exclude_clusters=(corpus.clusters[row], *near), prompt=prompt, nearest_corpus=nearest,
                              effect=effects[prompt], effect_bin=effect_bin))
    return targets


def control_targets(corpora: Mapping[int, CorpusShifts], generics: Mapping[int, torch.Tensor],
                    items: Sequence[Target], positive_effects: Mapping[str, float] | None, config: AuditConfig,
                    key: Mapping[str, Any]) -> list[Target]:
    """Every control that one setting's vector `items` need, each once, in plan order: the activation positives,
    activation nulls for each set of norm bins, and, when the items carry their steer effects (`positive_effects`
    given: the behavior axis), behavior nulls for each (norm bins, effect bin) and behavior positives for each
    effect bin."""
    controls = positive_targets(corpora, generics, config, key)
    for bins in sorted({norm_bins(t.goal) for t in items}):
        controls += null_targets(corpora, bins, config, key, axis="activation")
    if positive_effects is not None:
        for bins, e_bin in sorted({(norm_bins(t.goal), t.effect_bin) for t in items}):
            if e_bin is None:
                raise ValueError(f"items: {[t.name for t in items if t.effect_bin is None]} carry no steer effect")
            controls += null_targets(corpora, bins, config, key, axis="behavior", effect_bin=e_bin)
        for e_bin in sorted({t.effect_bin for t in items if t.effect_bin is not None}):
            controls += behavior_positive_targets(corpora, generics, positive_effects, e_bin, config, key)
    seen: set[str] = set()  # the same control can be planned for two vectors
    return [t for t in controls if not (t.vector_id in seen or seen.add(t.vector_id))]
