"""Lloyd's k-means for all M subspaces at once, as one batched torch computation.

Shapes: ``X`` is (M, n, sub_dim) — the n training vectors split into M sub-vectors;
centroids are (M, K, sub_dim); assignments are (M, n) int64.

This is the k-means of faiss ``Clustering`` (random distinct points as the initial centroids,
empty clusters repaired by splitting a large one with a small symmetric perturbation), written
so that one iteration is a handful of batched tensor ops, never a Python loop over subspaces.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

SPLIT_EPS = 1.0 / 1024.0  # faiss's perturbation when splitting a cluster into an empty one
_CHUNK_ELEMENTS = 1 << 24  # bound on the (M, chunk, K) distance block: 64 MB of float32


@dataclass
class LloydState:
    """One iteration's result: centroids (M, K, sub_dim), assign (M, n), counts (M, K), and the
    mean squared quantization error over the n vectors (summed across subspaces) before update."""

    iteration: int
    centroids: torch.Tensor
    assign: torch.Tensor
    counts: torch.Tensor
    mse: float
    n_split: int


def split_into_subspaces(X: torch.Tensor, n_subspaces: int) -> torch.Tensor:
    """(n, d) → (M, n, d/M) view-compatible copy: sub-vector m is columns [m·d/M, (m+1)·d/M)."""
    n, d = X.shape
    return X.reshape(n, n_subspaces, d // n_subspaces).permute(1, 0, 2).contiguous()


def assign_nearest(Xs: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid per sub-vector: returns (assign (M, n) int64, squared distance (M, n)).

    Computed as ||x||² − 2·x·c + ||c||² in chunks of rows so memory stays bounded for large n.
    """
    M, n, _ = Xs.shape
    K = centroids.shape[1]
    c_norm = (centroids * centroids).sum(-1)  # (M, K)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, M * K))
    assign = torch.empty((M, n), dtype=torch.int64, device=Xs.device)
    dist = torch.empty((M, n), dtype=Xs.dtype, device=Xs.device)
    for start in range(0, n, chunk):
        xb = Xs[:, start:start + chunk]
        d2 = torch.baddbmm(c_norm[:, None, :], xb, centroids.transpose(1, 2), alpha=-2.0)
        best, idx = d2.min(dim=2)
        x_norm = (xb * xb).sum(-1)
        assign[:, start:start + chunk] = idx
        dist[:, start:start + chunk] = (best + x_norm).clamp_min_(0)
    return assign, dist


def _split_empty(centroids: torch.Tensor, counts: torch.Tensor, n: int, rng: np.random.Generator) -> int:
    """Give every empty cluster a perturbed copy of a populous one (faiss ``split_clusters``).

    The cluster to split is drawn with probability ∝ (size − 1), like faiss; each pair is pushed
    apart by ±SPLIT_EPS relative, alternating sign per dimension, and the count is halved.
    Loops only over empty clusters, which are rare after the first iterations.
    """
    empty = (counts == 0).nonzero().tolist()
    if not empty:
        return 0
    cnt = counts.cpu().numpy().astype(np.float64)
    sign = torch.ones(centroids.shape[-1], dtype=centroids.dtype, device=centroids.device)
    sign[1::2] = -1.0
    for m, ci in empty:
        weights = np.clip(cnt[m] - 1.0, 0.0, None)
        if weights.sum() <= 0:
            continue  # every cluster holds ≤ 1 point: nothing to split
        cj = int(rng.choice(len(weights), p=weights / weights.sum()))
        centroids[m, ci] = centroids[m, cj] * (1 + SPLIT_EPS * sign)
        centroids[m, cj] = centroids[m, cj] * (1 - SPLIT_EPS * sign)
        cnt[m, ci] = cnt[m, cj] // 2
        cnt[m, cj] -= cnt[m, ci]
    return len(empty)


def init_random_points(Xs: torch.Tensor, n_codewords: int, generator: torch.Generator) -> torch.Tensor:
    """K distinct training sub-vectors per subspace as the initial centroids (M, K, sub_dim)."""
    M, n, _ = Xs.shape
    order = torch.rand((M, n), generator=generator).argsort(dim=1)[:, :n_codewords].to(Xs.device)
    return torch.gather(Xs, 1, order[..., None].expand(-1, -1, Xs.shape[2])).clone()


def lloyd(Xs: torch.Tensor, centroids: torch.Tensor, n_iter: int, rng: np.random.Generator | None) -> Iterator[LloydState]:
    """Run ``n_iter`` Lloyd iterations from ``centroids`` (updated in place), yielding after each.

    Each iteration assigns every sub-vector to its nearest centroid, moves centroids to the mean
    of their members, then repairs empty clusters. The caller may stop iterating at any yield;
    the centroids are then a valid codebook.
    """
    M, n, ds = Xs.shape
    K = centroids.shape[1]
    for it in range(n_iter):
        assign, dist = assign_nearest(Xs, centroids)
        sums = torch.zeros((M, K, ds), dtype=Xs.dtype, device=Xs.device)
        sums.scatter_add_(1, assign[..., None].expand(-1, -1, ds), Xs)
        counts = torch.zeros((M, K), dtype=Xs.dtype, device=Xs.device)
        counts.scatter_add_(1, assign, torch.ones_like(assign, dtype=Xs.dtype))
        nonempty = counts > 0
        centroids[nonempty] = sums[nonempty] / counts[nonempty][:, None]
        n_split = 0 if rng is None else _split_empty(centroids, counts, n, rng)
        yield LloydState(it + 1, centroids, assign, counts, float(dist.sum(0).mean()), n_split)
