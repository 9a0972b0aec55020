"""Quality measures of a quantizer: distortion, nearest-neighbour recall, mAP, code usage.

Conventions: squared L2 everywhere; ``ranking`` arrays are (nq, R) int64 base ids, best first.
mAP follows the deep-hashing protocol of the DPQ and SSCQ papers: for each query, AP@k is the
mean of precision@i over the ranks i ≤ k that hold a relevant item (same class), divided by
the number of relevant items retrieved in the top k; mAP is the mean over queries.
"""
from __future__ import annotations

import numpy as np

from .diagnostics import perplexity_from_usage, usage_counts

__all__ = ["l2_normalize", "distortion", "recall_at", "recalls", "average_precisions", "mean_average_precision", "map_in_blocks",
           "queries_per_block", "usage_counts", "perplexity_from_usage",
           "soft_hard_gap"]


def l2_normalize(X) -> np.ndarray:
    """(n, d) float32 rows of X divided by their L2 norm, for the cosine metric; an all-zero row
    stays zero (as faiss's ``normalize_L2`` leaves it)."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.sqrt((X.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    return np.ascontiguousarray(X / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def distortion(X: np.ndarray, X_hat: np.ndarray) -> float:
    """Mean over vectors of ||x − x̂||² (summed over dimensions); X, X_hat (n, d)."""
    X = np.asarray(X, dtype=np.float64)
    return float(((X - np.asarray(X_hat, dtype=np.float64)) ** 2).sum(axis=1).mean())


def recall_at(ranking: np.ndarray, ground_truth: np.ndarray, r: int) -> float:
    """1-recall@R: fraction of queries whose exact nearest neighbour ``ground_truth[:, 0]`` is
    among the first ``r`` ids of ``ranking`` (nq, ≥r)."""
    gt = np.asarray(ground_truth)
    gt = gt[:, 0] if gt.ndim == 2 else gt
    return float((np.asarray(ranking)[:, :r] == gt[:, None]).any(axis=1).mean())


def recalls(ranking: np.ndarray, ground_truth: np.ndarray, rs=(1, 10, 100)) -> dict[str, float]:
    """{"1": recall@1, "10": recall@10, "100": recall@100} (R capped at the ranking's length)."""
    width = np.asarray(ranking).shape[1]
    return {str(r): recall_at(ranking, ground_truth, min(r, width)) for r in rs}


def average_precisions(ranking: np.ndarray, query_labels: np.ndarray, base_labels: np.ndarray,
                       k: int | None = None) -> np.ndarray:
    """(nq,) float64 AP@k of each query (k=None: over the whole ranking), relevance = equal class label.

    ranking: (nq, R) base ids, best first; query_labels (nq,); base_labels (n,).
    A query with no relevant item in its top k has AP = 0. Each row is scored on its own, so the
    APs of a block of queries equal those rows of the APs of all queries.
    """
    ranking = np.asarray(ranking)
    if k is not None:
        ranking = ranking[:, :k]
    rel = (np.asarray(base_labels)[ranking] == np.asarray(query_labels)[:, None]).astype(np.float64)
    hits = np.cumsum(rel, axis=1)
    precision = hits / np.arange(1, rel.shape[1] + 1)[None, :]
    n_rel = rel.sum(axis=1)
    return np.where(n_rel > 0, (precision * rel).sum(axis=1) / np.maximum(n_rel, 1), 0.0)


def mean_average_precision(ranking: np.ndarray, query_labels: np.ndarray, base_labels: np.ndarray,
                           k: int | None = None) -> float:
    """mAP@k (k=None: over the whole ranking) with relevance = equal class label: the mean of
    :func:`average_precisions`.

    ranking: (nq, R) base ids, best first; query_labels (nq,); base_labels (n,).
    A query with no relevant item in its top k contributes AP = 0.
    """
    return float(average_precisions(ranking, query_labels, base_labels, k).mean())


# Ranking ids held per block of queries by map_in_blocks: 2^20 int64 (8 MB); scoring them takes a
# few float64 (block, R) temporaries more, ~40 MB in all, whatever the base size.
RANKING_BLOCK = 1 << 20


def queries_per_block(n_base: int, budget: int = RANKING_BLOCK) -> int:
    """Queries whose full rankings of ``n_base`` ids fit in ``budget`` ids (at least 1)."""
    return max(1, budget // max(1, int(n_base)))


def map_in_blocks(rankings, query_labels: np.ndarray, base_labels: np.ndarray, *, ks=(None,),
                  keep: int = 0) -> tuple[list[float], np.ndarray]:
    """mAP@k for each k in ``ks`` of rankings that come a block of queries at a time, and their first ``keep`` ids.

    ``rankings`` yields the (b, R) rankings of successive blocks of queries, in query order
    (e.g. :meth:`~explorer.methods.base.Quantizer.search_blocks`); each is scored
    (:func:`average_precisions`) and dropped, so memory is a block's (b, R) — two while the next
    is made — rather than (nq, R): mAP@all over a base of 10^6 vectors ranks all of it per query. The means
    equal :func:`mean_average_precision` of the stacked rankings, whatever the block sizes.
    Returns ([mAP@k for k in ks], (nq, keep) int64 first ids of every ranking).
    """
    query_labels = np.asarray(query_labels)
    aps, kept, start = [[] for _ in ks], [], 0
    for ranking in rankings:
        ranking = np.asarray(ranking)
        rows = slice(start, start + len(ranking))
        for k, into in zip(ks, aps):
            into.append(average_precisions(ranking, query_labels[rows], base_labels, k))
        kept.append(ranking[:, :keep].copy())  # a copy: a view would keep the whole (b, R) block alive
        start = rows.stop
    if start != len(query_labels):
        raise ValueError(f"the rankings cover {start} queries but there are {len(query_labels)} query labels")
    means = [float(np.concatenate(a).mean()) for a in aps]
    return means, np.concatenate(kept)


def soft_hard_gap(soft: np.ndarray, hard: np.ndarray, soft_assign: np.ndarray, hard_codes: np.ndarray) -> dict:
    """Soft-vs-hard discrepancy of a soft-assignment quantizer.

    soft, hard: (n, D) soft (Σ p·C) and hard (argmax codeword) reconstructions;
    soft_assign: (n, M, K) assignment probabilities; hard_codes: (n, M).
    Returns {"gap": mean ||soft − hard||², "agreement": fraction of argmax(p) == hard code}.
    """
    gap = float(((np.asarray(soft, np.float64) - np.asarray(hard, np.float64)) ** 2).sum(axis=1).mean())
    agreement = float((np.asarray(soft_assign).argmax(axis=-1) == np.asarray(hard_codes)).mean())
    return {"gap": gap, "agreement": agreement}
