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

from .errors import InvalidParameter, InvalidType

_USAGE_BLOCK = 1 << 16  # codes counted per block: the int64 copies stay at 0.5 MB whatever n is


def _is_tensor(x) -> bool:
    return hasattr(x, "detach") and hasattr(x, "device")


_INTEGER_DTYPES: dict = {}


def _integer_dtype(dtype) -> bool:
    """Whether a numpy or torch ``dtype`` holds integers (bool does not); cached by dtype, as a
    monitor asks once per batch."""
    known = _INTEGER_DTYPES.get(dtype)
    if known is None:
        name = str(dtype)
        known = _INTEGER_DTYPES[dtype] = "bool" not in name and ("int" in name)
    return known


def code_matrix(codes, n_subspaces: int | None = None, name: str = "codes", *, flatten: bool = True):
    """``codes`` as an integer (n, M) matrix (numpy or torch, where it lives; no copy when possible).

    ``codes`` is (..., M) — vector-quantize-pytorch's (b, n, heads) and ResidualVQ's (..., levels)
    put the codebook on the last axis — or, when ``n_subspaces`` is 1, any shape (every entry a
    code of the one codebook). Raises :class:`InvalidType` for float or non-numeric codes and
    :class:`InvalidParameter` when the last axis is not M. ``flatten=False`` only checks and
    returns ``codes`` as given (no torch operation: a caller that reshapes later, in a batch).
    """
    if not _is_tensor(codes):
        codes = np.asarray(codes)
    if not _integer_dtype(codes.dtype):
        dtype = str(codes.dtype)
        raise InvalidType(f"{name} has dtype {dtype}; pass integer codeword indices (the indices a quantizer "
                          "returns, e.g. the second output of VectorQuantize), not quantized vectors or probabilities")
    if n_subspaces is None:
        if codes.ndim != 2:
            raise InvalidParameter(f"{name} must be 2-D (n, M); got shape {tuple(codes.shape)}")
        return codes
    if n_subspaces == 1 and (codes.ndim == 0 or codes.shape[-1] != 1):
        return codes.reshape(-1, 1) if flatten else codes
    if codes.ndim == 0 or codes.shape[-1] != n_subspaces:
        raise InvalidParameter(f"{name} has shape {tuple(codes.shape)}, whose last axis is not n_subspaces (M)="
                               f"{n_subspaces}; pass codes of shape (..., {n_subspaces}) with the codebook on the "
                               "last axis, or set n_subspaces to the size of that axis")
    return codes.reshape(-1, n_subspaces) if flatten else codes


def usage_counts(codes, n_codewords: int, *, ignore_index: int | None = None, name: str = "codes") -> np.ndarray:
    """(M, K) int64 counts of each codeword in ``codes`` (n, M), numpy or a torch tensor.

    A tensor is counted where it lives (``torch.bincount`` with per-subspace offsets, on its
    device); only the (M, K) counts move to the CPU. Numpy codes are counted in blocks of rows, so
    the uint8 codes of a huge base are never copied whole to int64. Entries equal to
    ``ignore_index`` (vector-quantize-pytorch's -1 for masked positions and dropped levels) are
    skipped; any other entry outside [0, K) raises :class:`InvalidParameter` naming the value.
    """
    codes = code_matrix(codes, None, name)
    n_sub = int(codes.shape[1])
    K = int(n_codewords)
    if _is_tensor(codes):
        return _usage_counts_torch(codes, K, ignore_index, name)
    offsets = np.arange(n_sub, dtype=np.int64)[None, :] * K
    rows = max(1, _USAGE_BLOCK // max(n_sub, 1))
    counts = np.zeros(n_sub * K, dtype=np.int64)
    for start in range(0, max(len(codes), 1), rows):
        block = codes[start:start + rows].astype(np.int64)
        keep = None if ignore_index is None else block != ignore_index
        valid = block if keep is None else block[keep]
        if valid.size and (valid.min() < 0 or valid.max() >= K):
            _out_of_range(int(valid.min()) if valid.min() < 0 else int(valid.max()), K, ignore_index, name)
        flat = (block + offsets) if keep is None else (block + offsets)[keep]
        counts += np.bincount(flat.ravel(), minlength=n_sub * K)
    return counts.reshape(n_sub, K)


def _usage_counts_torch(codes, K: int, ignore_index, name: str) -> np.ndarray:
    return usage_counts_on_device(codes, K, ignore_index=ignore_index, name=name).reshape(-1, K).cpu().numpy()


_OFFSETS: dict = {}


def usage_counts_on_device(codes, n_codewords: int, *, ignore_index: int | None = None, name: str = "codes"):
    """:func:`usage_counts` of a torch tensor ``codes`` (n, M), left on its device as a flat (M·K,)
    int64 tensor (a caller summing several batches moves the counts to the CPU once).

    One pass over the codes: the range check is one ``aminmax`` and a single two-number transfer.
    With ``ignore_index`` None or −1 (vector-quantize-pytorch's mask) no mask is built: a batch
    whose minimum is ≥ 0 is counted as it is, and one holding −1 is counted with every code
    shifted up by one, so the ignored entries fall into a bin of each subspace that is dropped.
    Another ``ignore_index`` is masked into an extra bin that is dropped."""
    import torch
    n_sub, K = int(codes.shape[1]), int(n_codewords)
    c = codes if codes.dtype == torch.long else codes.long()  # integer codes carry no gradient: no detach
    if not c.numel():
        return torch.zeros(n_sub * K, dtype=torch.long, device=c.device)
    shift = ignore_index == -1  # −1 entries are counted one bin below each subspace's codes, then dropped
    keep = None
    if ignore_index is not None and not shift:
        keep = c != ignore_index
        c = c.masked_fill(~keep, 0)
    lo, hi = torch.stack(torch.aminmax(c)).tolist()
    floor = -1 if shift else 0
    if lo < floor or hi >= K:
        _out_of_range(lo if lo < floor else hi, K, ignore_index, name)
    if keep is not None:
        flat = (c + _offsets(c.device, n_sub, K)).masked_fill(~keep, n_sub * K)
        return torch.bincount(flat.reshape(-1), minlength=n_sub * K + 1)[: n_sub * K]
    if lo >= 0:
        return torch.bincount((c + _offsets(c.device, n_sub, K)).reshape(-1), minlength=n_sub * K)
    counts = torch.bincount((c + 1 + _offsets(c.device, n_sub, K + 1)).reshape(-1), minlength=n_sub * (K + 1))
    return counts.reshape(n_sub, K + 1)[:, 1:].reshape(-1)


def _offsets(device, n_sub: int, width: int):
    """(1, M) int64 tensor [0, width, 2·width, ...] on ``device``, cached: subspace m's first bin."""
    import torch
    key = (device, n_sub, width)
    offsets = _OFFSETS.get(key)
    if offsets is None:
        offsets = _OFFSETS[key] = torch.arange(n_sub, device=device, dtype=torch.long)[None, :] * width
    return offsets


def _out_of_range(value: int, K: int, ignore_index, name: str):
    skip = (f" (entries equal to ignore_index={ignore_index} are skipped)" if ignore_index is not None
            else "; pass ignore_index=-1 to skip masked entries")
    raise InvalidParameter(f"{name} holds {value}, outside [0, n_codewords (K)={K}){skip}; "
                           "check that K matches the quantizer's codebook size")


def perplexity_from_usage(usage: np.ndarray) -> np.ndarray:
    """(M,) exp(entropy) of each row of ``usage`` (M, K) taken as a distribution; 1 ≤ value ≤ K."""
    usage = np.asarray(usage, dtype=np.float64)
    total = usage.sum(axis=1, keepdims=True)
    p = usage / np.maximum(total, 1e-12)
    ent = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)  # 0 · log 1 = 0 for unused codewords
    return np.exp(ent)

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


def usage_histogram(codes, n_codewords: int, *, ignore_index: int | None = None) -> np.ndarray:
    """(M, K) counts of each codeword over ``codes`` (n, M); see :func:`usage_counts`."""
    return usage_counts(codes, n_codewords, ignore_index=ignore_index)


def perplexity(usage: np.ndarray) -> np.ndarray:
    """(M,) perplexity of each subspace's usage (M, K): between 1 (one codeword) and K (uniform)."""
    return perplexity_from_usage(usage)


def dead_codes(usage: np.ndarray) -> np.ndarray:
    """(M,) number of codewords with zero usage."""
    return (np.asarray(usage) == 0).sum(axis=1)


def _collapse_rule(usage: np.ndarray, min_perplexity_ratio: float, max_dead_fraction: float,
                   n_distinct, ppl=None, dead=None) -> dict:
    """The rule of the module docstring for every subspace at once, as (M,) arrays: k_eff,
    ppl, dead, dead_allowed, ratio, low (perplexity below the line), many_dead, collapsed.
    ``ppl``/``dead``: the usage's perplexity and dead codes when the caller has them."""
    usage = np.asarray(usage)
    M, K = usage.shape
    ppl = perplexity(usage) if ppl is None else np.asarray(ppl, dtype=np.float64)
    dead = dead_codes(usage) if dead is None else np.asarray(dead)
    k_eff = np.minimum(K, np.maximum(usage.sum(axis=1), 1)).astype(np.int64)
    if n_distinct is not None:
        k_eff = np.maximum(1, np.minimum(k_eff, np.asarray(n_distinct, dtype=np.int64)))
    ratio = ppl / k_eff
    dead_allowed = np.maximum(K - k_eff, int(max_dead_fraction * K))
    low = (k_eff > 1) & (ratio < min_perplexity_ratio)
    many_dead = dead > dead_allowed
    return {"k_eff": k_eff, "ppl": ppl, "dead": dead, "dead_allowed": dead_allowed, "ratio": ratio, "low": low,
            "many_dead": many_dead, "collapsed": low | many_dead}


def detect_collapse(usage: np.ndarray, *, min_perplexity_ratio: float = MIN_PERPLEXITY_RATIO,
                    max_dead_fraction: float = MAX_DEAD_FRACTION,
                    n_distinct: np.ndarray | None = None) -> list[SubspaceVerdict]:
    """Per-subspace verdicts from usage counts (M, K); see the module docstring for the rule.

    ``n_distinct`` (M,), if given, caps each subspace's usable codewords at the number of distinct
    sub-vectors its data hold, so a subspace that is constant in the data is not called collapsed.
    """
    usage = np.asarray(usage)
    K = usage.shape[1]
    r = _collapse_rule(usage, min_perplexity_ratio, max_dead_fraction, n_distinct)
    verdicts = []
    for m in range(usage.shape[0]):
        ppl, k_eff, ratio, dead = r["ppl"][m], int(r["k_eff"][m]), r["ratio"][m], int(r["dead"][m])
        reasons = []
        if r["low"][m]:
            reasons.append(f"perplexity {ppl:.1f} of {k_eff} usable codewords ({ratio:.0%} < {min_perplexity_ratio:.0%})")
        if r["many_dead"][m]:
            reasons.append(f"{dead} of {K} codewords dead ({dead / K:.0%} > {r['dead_allowed'][m] / K:.0%})")
        collapsed = bool(reasons)
        reason = "; ".join(reasons) if collapsed else (
            f"perplexity {ppl:.1f} of {k_eff} usable codewords ({ratio:.0%}), {dead} dead")
        verdicts.append(SubspaceVerdict(m, collapsed, float(ppl), dead, K, reason))
    return verdicts


def collapsed_mask(usage: np.ndarray, *, min_perplexity_ratio: float = MIN_PERPLEXITY_RATIO,
                   max_dead_fraction: float = MAX_DEAD_FRACTION, n_distinct: np.ndarray | None = None,
                   perplexity: np.ndarray | None = None, dead: np.ndarray | None = None) -> np.ndarray:
    """(M,) bool: which subspaces :func:`detect_collapse` calls collapsed, without its reason
    sentences (cheap enough for every training step). ``perplexity``, ``dead``: the usage's
    (a :class:`~explorer.events.Step`'s), when already computed."""
    return _collapse_rule(usage, min_perplexity_ratio, max_dead_fraction, n_distinct, perplexity, dead)["collapsed"]


def distinct_subvectors(X: np.ndarray, n_subspaces: int, cap: int | None = None) -> np.ndarray:
    """(M,) number of distinct sub-vectors per subspace in X (n, d), counted up to ``cap``."""
    n, d = X.shape
    Xs = np.ascontiguousarray(X).reshape(n, n_subspaces, d // n_subspaces)
    out = np.empty(n_subspaces, dtype=np.int64)
    for m in range(n_subspaces):
        out[m] = len(np.unique(Xs[:, m, :], axis=0))
    return out if cap is None else np.minimum(out, cap)
