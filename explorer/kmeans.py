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
# Target size of the (M, K, chunk) distance block of the torch assignment. On the CPU, 1 MB of
# float32 (with its second buffer, within a core's share of cache): at 4 MB the digits fit
# (M=8, K=256, chunk 512) spent 20 ms an assignment against 7 ms at 1 MB (chunk 128), one
# thread, the same codes. On CUDA the block is the unit of a kernel launch: larger.
_CHUNK_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 20}
# Distance pairs (n · K) per subspace from which faiss's k-NN beats torch's blocked arg-min. Measured
# on 2 loaded cores, one thread: at 1,797 × 256 (digits) torch took 29 ms per assignment, faiss
# 77 ms (16 calls into its thread pool); at 16,384 × 256 faiss 124 ms, torch 520 ms.
_FAISS_MIN_PAIRS = 1 << 20


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
    """Nearest centroid per sub-vector: returns (assign (M, n) int64, squared distance (M, n)),
    on the device of ``Xs``; ties go to the smallest centroid index (as ``torch.min`` and faiss).

    On the CPU with float32 data, each subspace is one call of faiss's exact k-NN with k = 1
    (``knn_L2sqr``, the primitive faiss's own ``Clustering`` searches with): a BLAS-blocked (or,
    for small sub_dim, register-blocked) ||x||² + ||c||² − 2·x·c with the arg-min fused into
    the scan, so the (M, K, n) distance block is never written out. The M calls share the
    work buffers of this call; faiss bounds its own blocks, so memory is O(M·n) for the outputs
    whatever n is. Elsewhere (CUDA, float64), and for small problems (n·K below
    :data:`_FAISS_MIN_PAIRS`, where M calls into faiss's thread pool cost more than the
    distances), :func:`assign_nearest_torch` does it in torch.
    """
    if (Xs.device.type != "cpu" or Xs.dtype != torch.float32 or centroids.dtype != torch.float32
            or Xs.shape[1] * centroids.shape[1] < _FAISS_MIN_PAIRS):
        return assign_nearest_torch(Xs, centroids)
    import faiss
    M, n, ds = Xs.shape
    K = centroids.shape[1]
    X = np.ascontiguousarray(Xs.numpy())
    C = np.ascontiguousarray(centroids.detach().numpy())
    dist = np.empty((M, n), dtype=np.float32)
    assign = np.empty((M, n), dtype=np.int64)
    for m in range(M):  # one fused search per subspace: faiss parallelises over the n rows
        faiss.knn_L2sqr(faiss.swig_ptr(X[m]), faiss.swig_ptr(C[m]), ds, n, K, 1,
                        faiss.swig_ptr(dist[m]), faiss.swig_ptr(assign[m]))
    return torch.from_numpy(assign), torch.from_numpy(dist).clamp_min_(0)


def assign_nearest_torch(Xs: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`assign_nearest` in torch, on any device and dtype (the CUDA path).

    Computed as ||c||² − 2·x·c (+ ||x||² afterwards, which does not change the argmin) in
    chunks of rows, in a (M, K, chunk) layout so that the reduction over the K centroids runs
    across contiguous rows (SIMD) rather than along each row, which torch does one element at a
    time. The arg-min is recovered exactly as the smallest k whose distance equals the minimum
    (the first one on ties, as ``torch.min`` and faiss return). The work buffers are allocated
    once per call, sized to stay near the CPU cache (see :data:`_CHUNK_ELEMENTS`), so memory is
    bounded for any n.
    """
    M, n, _ = Xs.shape
    K = centroids.shape[1]
    c_norm = (centroids * centroids).sum(-1)[:, :, None]  # (M, K, 1)
    chunk = max(64, _CHUNK_ELEMENTS.get(Xs.device.type, 1 << 20) // max(1, M * K))
    chunk = min(chunk, n)
    assign = torch.empty((M, n), dtype=torch.int64, device=Xs.device)
    dist = torch.empty((M, n), dtype=Xs.dtype, device=Xs.device)
    d2 = torch.empty((M, K, chunk), dtype=Xs.dtype, device=Xs.device)
    marks = torch.empty((M, K, chunk), dtype=Xs.dtype, device=Xs.device)
    k_index = torch.arange(K, dtype=Xs.dtype, device=Xs.device)[None, :, None]
    for start in range(0, n, chunk):
        xb = Xs[:, start:start + chunk]  # (M, b, ds)
        b = xb.shape[1]
        d2b, mb = d2[:, :, :b], marks[:, :, :b]
        torch.baddbmm(c_norm, centroids, xb.transpose(1, 2), alpha=-2.0, out=d2b)  # (M, K, b)
        best = torch.amin(d2b, dim=1, keepdim=True)  # (M, 1, b)
        torch.ne(d2b, best, out=mb)  # 0 where a centroid attains the minimum, else 1
        torch.add(k_index, mb, alpha=K, out=mb)  # k there, k + K elsewhere: the min is the first arg-min
        assign[:, start:start + b] = torch.amin(mb, dim=1).clamp_max_(K - 1)
        dist[:, start:start + b] = best[:, 0]
    dist += (Xs * Xs).sum(-1)
    return assign, dist.clamp_min_(0)


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
    # (M, ds + 1, n): the sub-vectors dimension-major with a row of ones, so that one scatter along
    # the last axis sums every cluster's members and counts them (twice as fast as scattering the
    # (M, n, ds) rows, measured on 2 cores at 16 × 65,536 × 8); memory: one more copy of Xs
    members = torch.cat([Xs.transpose(1, 2), Xs.new_ones((M, 1, n))], dim=1).contiguous()
    for it in range(n_iter):
        assign, dist = assign_nearest(Xs, centroids)
        totals = torch.zeros((M, ds + 1, K), dtype=Xs.dtype, device=Xs.device)
        totals.scatter_add_(2, assign[:, None, :].expand(-1, ds + 1, -1), members)
        sums, counts = totals[:, :ds].transpose(1, 2), totals[:, ds]  # (M, K, ds), (M, K)
        # members' mean where a cluster has any (an empty one keeps its centroid until split)
        centroids.copy_(torch.where((counts > 0)[..., None], sums / counts.clamp_min(1)[..., None], centroids))
        n_split = 0 if rng is None else _split_empty(centroids, counts, n, rng)
        yield LloydState(it + 1, centroids, assign, counts, _sum64(dist) / n, n_split)


def _sum64(x: torch.Tensor) -> float:
    """Sum of a float tensor accumulated in float64 (numpy's pairwise sum on the CPU: 2.5×
    faster than torch's float64 reduction of float32 data, measured at 16 × 65,536)."""
    if x.device.type == "cpu":
        return float(x.numpy().sum(dtype=np.float64))
    return float(x.sum(dtype=torch.float64))
