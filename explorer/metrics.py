"""Quality measures of a quantizer: distortion, nearest-neighbour recall, mAP, code usage.

Conventions: squared L2 everywhere; ``ranking`` arrays are (nq, R) int64 base ids, best first.
mAP follows the deep-hashing protocol of the DPQ and SSCQ papers: for each query, AP@k is the
mean of precision@i over the ranks i ≤ k that hold a relevant item (same class), divided by
the number of relevant items retrieved in the top k; mAP is the mean over queries.
"""
from __future__ import annotations

import numpy as np

from .events import perplexity_from_usage, usage_counts

__all__ = ["distortion", "recall_at", "recalls", "mean_average_precision", "usage_counts", "perplexity_from_usage",
           "soft_hard_gap"]


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


def mean_average_precision(ranking: np.ndarray, query_labels: np.ndarray, base_labels: np.ndarray,
                           k: int | None = None) -> float:
    """mAP@k (k=None: over the whole ranking) with relevance = equal class label.

    ranking: (nq, R) base ids, best first; query_labels (nq,); base_labels (n,).
    A query with no relevant item in its top k contributes AP = 0.
    """
    ranking = np.asarray(ranking)
    if k is not None:
        ranking = ranking[:, :k]
    rel = (np.asarray(base_labels)[ranking] == np.asarray(query_labels)[:, None]).astype(np.float64)
    hits = np.cumsum(rel, axis=1)
    precision = hits / np.arange(1, rel.shape[1] + 1)[None, :]
    n_rel = rel.sum(axis=1)
    ap = np.where(n_rel > 0, (precision * rel).sum(axis=1) / np.maximum(n_rel, 1), 0.0)
    return float(ap.mean())


def soft_hard_gap(soft: np.ndarray, hard: np.ndarray, soft_assign: np.ndarray, hard_codes: np.ndarray) -> dict:
    """Soft-vs-hard discrepancy of a soft-assignment quantizer.

    soft, hard: (n, D) soft (Σ p·C) and hard (argmax codeword) reconstructions;
    soft_assign: (n, M, K) assignment probabilities; hard_codes: (n, M).
    Returns {"gap": mean ||soft − hard||², "agreement": fraction of argmax(p) == hard code}.
    """
    gap = float(((np.asarray(soft, np.float64) - np.asarray(hard, np.float64)) ** 2).sum(axis=1).mean())
    agreement = float((np.asarray(soft_assign).argmax(axis=-1) == np.asarray(hard_codes)).mean())
    return {"gap": gap, "agreement": agreement}
