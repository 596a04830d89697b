"""Work items of an audit: each vector's layer, and the calibration controls of that layer.

Controls (see `realize.verdict` for how they decide):

- `null`: random directions drawn from the layer's natural shift distribution, a Gaussian with the covariance of
  the natural prompts' mean shifts (`natural_nulls`), scaled to the norm bin of the vectors they calibrate.
  Natural shifts concentrate in a low-dimensional subspace; isotropic directions do not, which makes them easy to
  beat (README: 0.36 vs 0.18 of the energy in the 90 % subspace).
- `null-isotropic`: isotropic random directions at the same norm, reported as a labelled reference, never deciding.
- `positive`: mean shifts of held-out natural prompts (`positive_prompts` corpus). Their clusters are absent from
  the retrieval corpus and from realism training by construction (`realize.data.corpora`), and retrieval excludes
  them again by cluster, so a positive is realized by search, not by finding its paraphrase. Activation axis.
- `behavior-positive`: vectors distilled from the same held-out prompts (`realize.distill`): steering with them
  reproduces the prompt's behavior, so a prompt exists by construction. Behavior axis. The vector is trained when
  the item is audited (its id hashes the prompt, the layer and the configuration, not the trained bytes).

Axes: vectors and `null` controls are measured on every axis of the audit; `null-isotropic` and `positive` on the
activation axis, `behavior-positive` on the behavior axis.

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

from realize.audit_types import Axis, Kind
from realize.config import AuditConfig
from realize.corpus_shifts import CorpusShifts
from realize.data.vectors import SteeringVector, single_layer

BINS_PER_OCTAVE = 2


@dataclass(frozen=True)
class Target:
    """One thing to audit: a vector's single layer, or a control."""

    vector_id: str
    name: str
    source: str
    kind: Kind
    axes: tuple[Axis, ...]  # what to measure
    layer: int
    scale: float
    method: str
    direction: torch.Tensor  # v (d,); the target is scale * direction (behavior positives: trained later, zeros)
    exclude_clusters: tuple[str, ...] = ()  # clusters retrieval must not return (a positive's own)
    prompt: str = ""  # positives: the natural prompt behind the target

    @property
    def goal(self) -> torch.Tensor:
        return self.scale * self.direction.float()


def item_id(kind: str, direction: torch.Tensor, layer: int, scale: float, key: Mapping[str, Any]) -> str:
    """Stable id of a work item: hash of the vector bytes, its layer/scale, and what its result depends on."""
    digest = hashlib.sha256()
    digest.update(direction.detach().to(torch.float32).contiguous().numpy().tobytes())
    digest.update(json.dumps({"kind": kind, "layer": layer, "scale": scale, **key}, sort_keys=True,
                             default=str).encode())
    return digest.hexdigest()[:16]


def norm_bin(norm: float) -> int:
    """The bin of a target norm (2^(1/2) wide, centred on powers of sqrt(2))."""
    if not norm > 0 or not math.isfinite(norm):
        raise ValueError(f"norm: expected a positive finite target norm, got {norm}")
    return round(math.log2(norm) * BINS_PER_OCTAVE)


def bin_norm(index: int) -> float:
    return 2.0 ** (index / BINS_PER_OCTAVE)


def _axes(kind: Kind, config: AuditConfig) -> tuple[Axis, ...]:
    own: tuple[Axis, ...] = {"vector": ("activation", "behavior"), "null": ("activation", "behavior"),
                             "null-isotropic": ("activation",), "positive": ("activation",),
                             "behavior-positive": ("behavior",)}[kind]
    return tuple(a for a in own if a in config.axes)  # type: ignore[misc]


def vector_targets(vectors: Sequence[SteeringVector], key: Mapping[str, Any], config: AuditConfig) -> list[Target]:
    """One target per vector (its single layer). Every vector must carry a scale (loaders fill it from --scale)."""
    targets = []
    for i, vector in enumerate(vectors):
        layer, direction = single_layer(vector)
        if vector.scale is None:
            raise ValueError(f"vectors[{i}] ({vector.name or vector.source or 'unnamed'}): no scale; give the "
                             "coefficient a (steering adds a*v)")
        scale = float(vector.scale)
        targets.append(Target(item_id("vector", direction, layer, scale, key), vector.name or "vector",
                              vector.source or "", "vector", _axes("vector", config), layer, scale,
                              vector.method or "unknown", direction))
    return targets


def _generator(seed: int, *parts: object) -> torch.Generator:
    digest = hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def natural_nulls(shifts: torch.Tensor, count: int, norm: float, generator: torch.Generator) -> torch.Tensor:
    """(count, d) directions ~ N(0, C), C the covariance of the rows of `shifts` (n, d), each scaled to `norm`."""
    if shifts.shape[0] < 2:
        raise ValueError("shifts: the covariance needs at least two natural shifts")
    centered = shifts.double() - shifts.double().mean(dim=0)
    weights = torch.randn(count, shifts.shape[0], generator=generator, dtype=torch.float64)
    draws = weights @ centered / math.sqrt(shifts.shape[0] - 1)
    return (draws / draws.norm(dim=1, keepdim=True) * norm).float()


def isotropic_nulls(dim: int, count: int, norm: float, generator: torch.Generator) -> torch.Tensor:
    draws = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    return (draws / draws.norm(dim=1, keepdim=True) * norm).float()


def null_targets(corpus: CorpusShifts, layer: int, bin_index: int, config: AuditConfig,
                 key: Mapping[str, Any]) -> list[Target]:
    """The nulls of one (layer, norm bin): `n_null` natural-distribution ones, then `n_isotropic` isotropic ones.
    Null j is the same direction whatever the count, so raising n_null reuses the finished ones."""
    rows, _ = corpus.select("natural_prompts")
    natural = corpus.shifts[rows]
    norm = bin_norm(bin_index)
    targets = []
    for kind, count in (("null", config.n_null), ("null-isotropic", config.n_isotropic)):
        axes = _axes(kind, config)  # type: ignore[arg-type]
        for j in range(count if axes else 0):
            generator = _generator(config.seed, "null", kind, layer, bin_index, j)
            if kind == "null":
                direction = natural_nulls(natural, 1, norm, generator)[0]
            else:
                direction = isotropic_nulls(natural.shape[1], 1, norm, generator)[0]
            label = "natural-shift distribution" if kind == "null" else "isotropic"
            targets.append(Target(item_id(kind, direction, layer, 1.0, key), f"{kind}.L{layer}.norm{norm:.3g}.{j}",
                                  f"random direction ({label}), norm {norm:.3g}", kind, axes, layer,  # type: ignore[arg-type]
                                  1.0, "random", direction))
    return targets


def positive_targets(corpus: CorpusShifts, layer: int, config: AuditConfig, key: Mapping[str, Any]) -> list[Target]:
    """`n_positive` held-out natural prompts (seeded choice from the positive corpus): on the activation axis a target
    = the prompt's mean shift on the optimization contexts, on the behavior axis a vector distilled from the prompt;
    retrieval excludes the prompt's cluster on both."""
    rows, prompts = corpus.select("positive_prompts")
    if not rows:
        raise ValueError("positive_prompts: the corpus is empty")
    order = torch.randperm(len(rows), generator=_generator(config.seed, "positive", layer)).tolist()
    targets = []
    for j, i in enumerate(order[: config.n_positive]):
        row, prompt = rows[i], prompts[i]
        cluster = (corpus.clusters[row],)
        if "activation" in config.axes:
            direction = corpus.shifts[row].clone()
            targets.append(Target(item_id("positive", direction, layer, 1.0, key), f"positive.L{layer}.{j}",
                                  f"natural prompt: {prompt}", "positive", ("activation",), layer, 1.0,
                                  "natural-prompt shift", direction, exclude_clusters=cluster, prompt=prompt))
        if "behavior" in config.axes:
            placeholder = torch.zeros_like(corpus.shifts[row])
            targets.append(Target(item_id("behavior-positive", placeholder, layer, 1.0, {**key, "prompt": prompt}),
                                  f"behavior-positive.L{layer}.{j}", f"distilled from: {prompt}", "behavior-positive",
                                  ("behavior",), layer, 1.0, "prompt-distilled vector", placeholder,
                                  exclude_clusters=cluster, prompt=prompt))
    return targets
