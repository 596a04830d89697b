"""On-manifold diagnostic: how much of a steering vector lies in the subspace natural text actually uses at layer i.

Natural texts (the packaged corpora `contexts`, `natural_prompts`, `sentences`) are placed as user turns in the
chat template; the raw output of block i at every position of the user content and the assistant header (the
shared system head is skipped: it is the same for every text) forms the token x activation matrix X (N, d).
Its right singular vectors, ordered by singular value, span the directions natural activations vary along.

We report, for k90 / k99 = the fewest top singular vectors explaining 90 % / 99 % of the variance, the share of
|v|^2 inside their span: `|V_k^T v|^2 / |v|^2`. The same share for random Gaussian directions (mean over
`n_random`) is the reference: it is ~k/d. A steering vector far above the random share points where natural
activations already move; one near it is off-manifold.

Centering (documented decision): by default X is centered (mean over tokens removed), i.e. PCA of the
activations. A steering vector is a *displacement*, so what matters is the subspace along which activations vary;
uncentered, the first singular vector is the large mean activation (plus massive-activation dimensions), which
would flatter any vector with a component along the mean. `centered=False` gives the raw second-moment version.

The SVD (eigenvectors and variances) is cached per (model name, layer, centering, corpus text hash) under
`data.models.cache_root()/manifold/` as safetensors, written atomically.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from realize.data.atomic import atomic_output
from realize.data.activations import block_output, check_layer
from realize.data.chat import chat_layout, encode
from realize.data.corpora import load_corpus
from realize.data.models import LoadedModel, cache_root, pad_id

logger = logging.getLogger(__name__)
DEFAULT_CORPORA = ("contexts", "natural_prompts", "sentences")


@dataclass(frozen=True, kw_only=True)
class ManifoldConfig:
    centered: bool = True  # PCA of the activations (True) or the raw second moment (False); see module docstring
    max_texts: int = 600  # natural texts used (a seeded sample when the corpora hold more)
    n_random: int = 64  # random directions for the reference share
    batch_size: int = 16  # texts per forward
    seed: int = 0  # text sample and random directions
    use_cache: bool = True  # read/write the SVD cache
    show_progress: bool = False  # tqdm over batches

    def __post_init__(self) -> None:
        if self.max_texts < 2:
            raise ValueError(f"max_texts: expected >= 2, got {self.max_texts}")
        if self.n_random < 1:
            raise ValueError(f"n_random: expected >= 1, got {self.n_random}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class ManifoldBasis:
    """Right singular vectors of X (columns of `vectors`, (d, d), by decreasing variance) and their variances."""

    vectors: torch.Tensor
    variances: torch.Tensor  # (d,), squared singular values / N, decreasing
    n_tokens: int

    def rank_for(self, fraction: float) -> int:
        """Fewest leading directions whose variance reaches `fraction` of the total."""
        cumulative = torch.cumsum(self.variances, 0) / self.variances.sum().clamp_min(1e-30)
        return int(min(int((cumulative < fraction).sum()) + 1, self.variances.numel()))


@dataclass(frozen=True)
class ManifoldShare:
    layer: int
    k90: int  # directions explaining 90 % of the variance
    k99: int
    dim: int
    share90: float  # |V_k90^T v|^2 / |v|^2
    share99: float
    random_share90: float  # mean over random directions
    random_share99: float
    n_tokens: int  # rows of X


def subspace_share(vector: torch.Tensor, basis: torch.Tensor) -> float:
    """|basis^T v|^2 / |v|^2 for orthonormal columns `basis` (d, k)."""
    v = vector.double()
    return float((basis.double().T @ v).pow(2).sum() / v.pow(2).sum().clamp_min(1e-30))


def natural_texts(max_texts: int, seed: int, corpora: Sequence[str] = DEFAULT_CORPORA) -> list[str]:
    texts = [t for name in corpora for t in load_corpus(name)]  # type: ignore[arg-type]
    if len(texts) > max_texts:
        g = torch.Generator().manual_seed(seed)
        texts = [texts[i] for i in sorted(torch.randperm(len(texts), generator=g)[:max_texts].tolist())]
    return texts


@torch.no_grad()
def _covariance(lm: LoadedModel, layer: int, texts: Sequence[str], config: ManifoldConfig) -> tuple[torch.Tensor, int]:
    layout = chat_layout(lm.tokenizer)
    pad = pad_id(lm.tokenizer)
    d = lm.hidden_size
    total = torch.zeros(d, dtype=torch.float64)
    second = torch.zeros(d, d, dtype=torch.float64)
    n = 0
    placed = [layout.place(None, encode(lm.tokenizer, t)) for t in texts]
    for start in tqdm(range(0, len(placed), config.batch_size), desc="manifold", disable=not config.show_progress):
        chunk = placed[start : start + config.batch_size]
        width = max(len(p.ids) for p in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, p in enumerate(chunk):
            ids[b, : len(p.ids)] = torch.tensor(p.ids)
            mask[b, : len(p.ids)] = 1
        hidden = block_output(lm.model, layer, ids, mask)
        rows = torch.cat([hidden[b, list(p.aligned)] for b, p in enumerate(chunk)]).double()
        total += rows.sum(0)
        second += rows.T @ rows
        n += rows.shape[0]
    if config.centered:
        mean = total / n
        return second / n - torch.outer(mean, mean), n
    return second / n, n


def _cache_file(lm: LoadedModel, layer: int, texts: Sequence[str], centered: bool) -> Path:
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", lm.name)
    tag = "c" if centered else "u"
    return cache_root() / "manifold" / f"{safe}-L{layer}-{tag}-{digest}.safetensors"


def manifold_basis(lm: LoadedModel, layer: int, config: ManifoldConfig | None = None) -> ManifoldBasis:
    """The right singular basis of the natural token x activation matrix at `layer` (cached on disk)."""
    config = config or ManifoldConfig()
    check_layer(lm.model, layer)
    texts = natural_texts(config.max_texts, config.seed)
    path = _cache_file(lm, layer, texts, config.centered)
    if config.use_cache and path.is_file():
        try:
            stored = load_file(str(path))
            return ManifoldBasis(stored["vectors"], stored["variances"], int(stored["n_tokens"].item()))
        except Exception as err:  # noqa: BLE001 - a corrupt cache is recomputed, never fatal
            logger.warning("manifold cache %s unreadable (%s); recomputing", path, err)
    cov, n = _covariance(lm, layer, texts, config)
    variances, vectors = torch.linalg.eigh(cov)  # ascending; eigenvectors of X^T X = right singular vectors
    order = torch.argsort(variances, descending=True)
    basis = ManifoldBasis(vectors[:, order].float().contiguous(), variances[order].clamp_min(0).float(), n)
    if config.use_cache:
        with atomic_output(path) as tmp:
            save_file(
                {"vectors": basis.vectors, "variances": basis.variances, "n_tokens": torch.tensor([n])},
                str(tmp),
                metadata={"model": lm.name, "layer": str(layer), "centered": str(config.centered)},
            )
    return basis


def manifold_share(
    lm: LoadedModel, vector: torch.Tensor, layer: int, config: ManifoldConfig | None = None
) -> ManifoldShare:
    """Share of |vector|^2 in the top natural subspaces (90 % / 99 % of variance) at `layer`, with the random
    reference (see the module docstring)."""
    config = config or ManifoldConfig()
    if vector.ndim != 1 or vector.numel() != lm.hidden_size:
        raise ValueError(f"vector: expected shape ({lm.hidden_size},), got {tuple(vector.shape)}")
    basis = manifold_basis(lm, layer, config)
    return share_in_basis(basis, vector, layer, n_random=config.n_random, seed=config.seed)


def share_in_basis(
    basis: ManifoldBasis, vector: torch.Tensor, layer: int, *, n_random: int = 64, seed: int = 0
) -> ManifoldShare:
    """`manifold_share` for a precomputed basis."""
    k90, k99 = basis.rank_for(0.90), basis.rank_for(0.99)
    d = basis.vectors.shape[0]
    randoms = torch.randn(n_random, d, generator=torch.Generator().manual_seed(seed))
    top90, top99 = basis.vectors[:, :k90], basis.vectors[:, :k99]
    return ManifoldShare(
        layer=layer,
        k90=k90,
        k99=k99,
        dim=d,
        share90=subspace_share(vector.float().cpu(), top90),
        share99=subspace_share(vector.float().cpu(), top99),
        random_share90=sum(subspace_share(r, top90) for r in randoms) / n_random,
        random_share99=sum(subspace_share(r, top99) for r in randoms) / n_random,
        n_tokens=basis.n_tokens,
    )
