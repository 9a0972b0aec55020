"""The k-means assignment step: faiss's fused k-NN (CPU, float32) and the torch path (CUDA,
float64) give the nearest centroid, the first one on ties, with its squared distance."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import explorer.kmeans
from explorer.kmeans import assign_nearest, assign_nearest_torch


@pytest.fixture(autouse=True)
def faiss_for_every_size(monkeypatch):
    """These small problems would go to torch (below _FAISS_MIN_PAIRS): send them to faiss."""
    monkeypatch.setattr(explorer.kmeans, "_FAISS_MIN_PAIRS", 0)


def brute_force(X: np.ndarray, C: np.ndarray):
    """(assign (M, n), dist (M, n)) by the definition, in float64: first arg-min of ||x − c||²."""
    d = ((X[:, :, None, :].astype(np.float64) - C[:, None, :, :]) ** 2).sum(-1)  # (M, n, K)
    return d.argmin(-1), d.min(-1)


@pytest.mark.parametrize("sub_dim", [1, 4, 8, 16, 40])
def test_assignment_is_the_first_nearest_centroid_even_on_exact_ties(sub_dim):
    rng = np.random.default_rng(sub_dim)
    # Small integers: many sub-vectors sit at exactly equal distances from several centroids, and
    # centroids repeat (an empty-cluster split not yet apart), so the tie rule decides.
    X = rng.integers(0, 3, size=(3, 5000, sub_dim)).astype(np.float32)
    C = rng.integers(0, 3, size=(3, 64, sub_dim)).astype(np.float32)
    C[:, 40] = C[:, 3]
    ref_assign, ref_dist = brute_force(X, C)
    for fn, dtype in ((assign_nearest, torch.float32), (assign_nearest_torch, torch.float32),
                      (assign_nearest, torch.float64)):
        assign, dist = fn(torch.from_numpy(X).to(dtype), torch.from_numpy(C).to(dtype))
        assert assign.dtype == torch.int64 and assign.shape == (3, 5000)
        np.testing.assert_array_equal(assign.numpy(), ref_assign)
        np.testing.assert_allclose(dist.numpy(), ref_dist, rtol=1e-5, atol=1e-5)


def test_faiss_and_torch_paths_agree_on_float_data():
    """Gaussian data (no exact ties): the two paths pick the same centroids; distances to float32 rounding."""
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.standard_normal((4, 20000, 8)).astype(np.float32))
    C = torch.from_numpy(rng.standard_normal((4, 256, 8)).astype(np.float32))
    a, d = assign_nearest(X, C)
    a_t, d_t = assign_nearest_torch(X, C)
    assert (a != a_t).float().mean() < 1e-4  # only float32 near-ties may differ
    np.testing.assert_allclose(d.numpy(), d_t.numpy(), rtol=1e-4, atol=1e-4)
    ref_assign, _ = brute_force(X.numpy(), C.numpy())
    assert (a.numpy() != ref_assign).mean() < 1e-4
