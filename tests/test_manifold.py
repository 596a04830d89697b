"""On-manifold diagnostic: subspace shares, ranks, random reference, SVD oracle and cache."""

from __future__ import annotations

import pytest
import torch

from realize.scorers.manifold import (
    ManifoldBasis,
    ManifoldConfig,
    manifold_basis,
    manifold_share,
    share_in_basis,
    subspace_share,
)


def test_subspace_share_basics() -> None:
    basis = torch.eye(6)[:, :2]
    assert subspace_share(torch.tensor([1.0, 0, 0, 0, 0, 0]), basis) == pytest.approx(1.0)
    assert subspace_share(torch.tensor([0, 0, 1.0, 0, 0, 0]), basis) == pytest.approx(0.0)
    assert subspace_share(torch.tensor([1.0, 1.0, 1.0, 1.0, 0, 0]), basis) == pytest.approx(0.5)


def test_rank_for_and_random_reference() -> None:
    variances = torch.tensor([50.0, 40.0, 9.0, 0.5, 0.3, 0.2])
    basis = ManifoldBasis(torch.eye(6), variances, 100)
    assert basis.rank_for(0.90) == 2 and basis.rank_for(0.99) == 3
    share = share_in_basis(basis, torch.tensor([1.0, 0, 0, 0, 0, 0]), 0, n_random=2000)
    assert share.share90 == pytest.approx(1.0) and share.k90 == 2
    assert share.random_share90 == pytest.approx(2 / 6, abs=0.03)  # ~k/d for random directions
    assert share.random_share99 == pytest.approx(3 / 6, abs=0.03)


def test_basis_matches_svd_and_is_cached(tiny, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("REALIZE_CACHE", str(tmp_path))
    config = ManifoldConfig(max_texts=30, batch_size=8)
    basis = manifold_basis(tiny, 1, config)
    d = tiny.hidden_size
    assert basis.vectors.shape == (d, d)
    torch.testing.assert_close(basis.vectors.T @ basis.vectors, torch.eye(d), atol=1e-4, rtol=1e-4)
    assert (basis.variances[:-1] >= basis.variances[1:] - 1e-6).all()
    files = list((tmp_path / "manifold").glob("*.safetensors"))
    assert len(files) == 1 and not list((tmp_path / "manifold").glob("*.tmp"))
    cached = manifold_basis(tiny, 1, config)
    torch.testing.assert_close(cached.variances, basis.variances)
    # The top direction carries the most variance: its share beats the random reference.
    share = manifold_share(tiny, basis.vectors[:, 0] * 3.0, 1, config)
    assert share.share90 == pytest.approx(1.0, abs=1e-4) and share.random_share90 < 1.0
    low = manifold_share(tiny, basis.vectors[:, -1], 1, config)
    assert low.share90 == pytest.approx(0.0, abs=1e-4) and low.share99 < share.share99


def test_corrupt_cache_recomputed(tiny, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("REALIZE_CACHE", str(tmp_path))
    config = ManifoldConfig(max_texts=10, batch_size=8, centered=False)
    manifold_basis(tiny, 0, config)
    (path,) = (tmp_path / "manifold").glob("*.safetensors")
    path.write_bytes(b"garbage")
    basis = manifold_basis(tiny, 0, config)
    assert basis.n_tokens > 0


def test_validation(tiny) -> None:
    with pytest.raises(ValueError, match="vector"):
        manifold_share(tiny, torch.zeros(5), 1)
    with pytest.raises(ValueError, match="n_random"):
        ManifoldConfig(n_random=0)
