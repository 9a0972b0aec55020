"""Codebook health: usage histogram, perplexity, dead codes, and a collapse detector.

The collapse rule (per subspace, from its usage counts over n assigned vectors):

* the usable number of codewords is ``K_eff = min(K, n)``;
* **collapsed** when the perplexity (exp of the usage entropy, i.e. the number of equally used
  codewords that would give the same entropy) is below ``min_perplexity_ratio`` · K_eff
  (default 0.25), or when more than ``max_dead_fraction`` of the K codewords (default 0.5)
  received no vector at all;
* otherwise **healthy**.

A k-means codebook on real data sits well above both lines (digits, M=8, K=256: perplexity ≈ 0.87 K
and no dead codes); a collapsed one (narrow init without repair: ≈ 0.15 K, 75% dead), where a few codewords take almost everything, falls
far below. The verdict carries its reason as a sentence, so a view can show *why*.

Subspaces whose data hold fewer distinct sub-vectors than K (the constant border pixels of
digits, say) cannot use every codeword; pass ``n_distinct`` to measure them against what
their data allow instead of against K. Supervised methods whose codes follow the classes (DPQ,
FPPQ: one codeword per class and subspace) are measured the same way against the class count
(``Quantizer.usable_codewords``): 10 digit classes on 10 of 256 codewords is their design, not a
collapse, while all classes on 2 codewords still is one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .events import perplexity_from_usage, usage_counts

MIN_PERPLEXITY_RATIO = 0.25
MAX_DEAD_FRACTION = 0.5


@dataclass(frozen=True)
class SubspaceVerdict:
    """Collapse verdict of one subspace: ``collapsed`` plus the numbers and a human reason."""

    subspace: int
    collapsed: bool
    perplexity: float
    dead_codes: int
    n_codewords: int
    reason: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def usage_histogram(codes: np.ndarray, n_codewords: int) -> np.ndarray:
    """(M, K) counts of each codeword over ``codes`` (n, M)."""
    return usage_counts(codes, n_codewords)


def perplexity(usage: np.ndarray) -> np.ndarray:
    """(M,) perplexity of each subspace's usage (M, K): between 1 (one codeword) and K (uniform)."""
    return perplexity_from_usage(usage)


def dead_codes(usage: np.ndarray) -> np.ndarray:
    """(M,) number of codewords with zero usage."""
    return (np.asarray(usage) == 0).sum(axis=1)


def detect_collapse(usage: np.ndarray, *, min_perplexity_ratio: float = MIN_PERPLEXITY_RATIO,
                    max_dead_fraction: float = MAX_DEAD_FRACTION,
                    n_distinct: np.ndarray | None = None) -> list[SubspaceVerdict]:
    """Per-subspace verdicts from usage counts (M, K); see the module docstring for the rule.

    ``n_distinct`` (M,), if given, caps each subspace's usable codewords at the number of distinct
    sub-vectors its data hold, so a subspace that is constant in the data is not called collapsed.
    """
    usage = np.asarray(usage)
    M, K = usage.shape
    ppl = perplexity(usage)
    dead = dead_codes(usage)
    n = usage.sum(axis=1)
    verdicts = []
    for m in range(M):
        k_eff = int(min(K, max(n[m], 1)))
        if n_distinct is not None:
            k_eff = int(max(1, min(k_eff, n_distinct[m])))
        ratio = ppl[m] / k_eff
        dead_allowed = max(K - k_eff, int(max_dead_fraction * K))
        reasons = []
        if k_eff > 1 and ratio < min_perplexity_ratio:
            reasons.append(f"perplexity {ppl[m]:.1f} of {k_eff} usable codewords ({ratio:.0%} < {min_perplexity_ratio:.0%})")
        if dead[m] > dead_allowed:
            reasons.append(f"{dead[m]} of {K} codewords dead ({dead[m] / K:.0%} > {dead_allowed / K:.0%})")
        collapsed = bool(reasons)
        reason = "; ".join(reasons) if collapsed else (
            f"perplexity {ppl[m]:.1f} of {k_eff} usable codewords ({ratio:.0%}), {dead[m]} dead")
        verdicts.append(SubspaceVerdict(m, collapsed, float(ppl[m]), int(dead[m]), K, reason))
    return verdicts


def collapsed_mask(usage: np.ndarray, **kwargs) -> np.ndarray:
    """(M,) bool: which subspaces :func:`detect_collapse` calls collapsed."""
    return np.array([v.collapsed for v in detect_collapse(usage, **kwargs)], dtype=bool)


def distinct_subvectors(X: np.ndarray, n_subspaces: int, cap: int | None = None) -> np.ndarray:
    """(M,) number of distinct sub-vectors per subspace in X (n, d), counted up to ``cap``."""
    n, d = X.shape
    Xs = np.ascontiguousarray(X).reshape(n, n_subspaces, d // n_subspaces)
    out = np.empty(n_subspaces, dtype=np.int64)
    for m in range(n_subspaces):
        out[m] = len(np.unique(Xs[:, m, :], axis=0))
    return out if cap is None else np.minimum(out, cap)
