"""FPPQ — Full Potential Product Quantization (Liang, Zhang, Li & Wang, "Unleashing the Full
Potential of Product Quantization for Large-Scale Image Retrieval", NeurIPS 2023; Algorithm 1 is
in the supplementary material).

The method in three parts (Sec. 4 of the paper):

1. **Class-level PQ labels** (Sec. 4.2, Eq. 8). Average the features of each class, train PQ
   (k-means per subspace) on the class means and encode them: class c gets the label
   (k_1..k_M). Classes that share a label are moved, one by one, to the *free* code tuple with
   the lowest quantization error. With fewer classes than K (ImageNet100; digits here) k-means
   cannot run on the class means, so PQ is trained on all instance features and the class means
   are encoded with it (Sec. 5.4). When the label PQ produces too many duplicates (ImageNet1K:
   > 50 %), the paper falls back to OrthoHash's non-redundant Bernoulli-sampled codes, cut into
   M segments of log2 K bits (Sec. 5.4).
2. **Training** (Sec. 4.1, Eqs. 2–7). Backbone feature F (D dims) → M sub-branches; branch m
   is a bias-free K-way classifier over the normalised segment F̃_m with normalised weights
   w̃_mk, trained with a CosFace margin on its label digit k_m (L_pq, Eq. 6), plus a
   classification loss L_cls on the whole feature (Eq. 7: L = L_cls + L_pq).
3. **Retrieval** (Sec. 4.3, Eqs. 9–11, Algorithm 1 RETRIEVAL). The codebook is the normalised
   branch weights, C_mk = w̃_mk, (M, K, D/M). Encoding is plain PQ (nearest codeword);
   search is symmetric (Eq. 9) or asymmetric (Eq. 10) table look-up, also through a faiss
   ``IndexPQ`` loaded with C (``to_faiss()``).

What ``transform`` returns. By default (``segment_normalize=False``) the raw backbone feature F,
(n, D) float32 — the "F" row of the supplement's Table 3, what the paper evaluates with.
``segment_normalize=True`` returns F with each of its M segments scaled to unit L2 norm, ``[F̃_1,
…, F̃_M]``, so ||z||² = M and every sub-vector lies on the unit sphere of the codewords (the
"SegFnor" row). Codes are identical either way (Eq. 11: with unit codewords the nearest codeword
by L2 is the one with the largest cosine, whatever ||F_m||), so only asymmetric distances differ;
the paper reports the difference as negligible.

Checked against the authors' released code (github.com/yuleung/FPPQ, Glint360K only; read, not
copied). It confirms: L_pq is CosFace, s·(cos θ − m) with s = 64, m = 0.2 (Eq. 6's cos(θ + m) is
a misprint, hence ``margin_kind="cosface"``), a cross-entropy averaged over the B·M segments;
L = L_cls + L_pq; the codebook is the normalised branch weights, searched by a faiss ``IndexPQ``;
the labels come from faiss-style PQ on the class means. It settles two points the paper leaves
open, which we follow: L_cls (and the pre-training) uses insightface's CosFace default m = 0.4
(``cls_margin``), and the backbone features and their class means are L2-normalised before the
label PQ (:func:`make_pq_labels` ``normalize``). Where it departs from the paper's text we keep
the text: duplicates move to the cheapest free tuple, best-fitting class first (Sec. 4.2; the
code's own mover changes one digit at a time and is flagged by its authors as unfinished), and
the learning rate decays linearly (Sec. 5.3; the code decays it quadratically). The paper's
optimizer is available (``optimizer="sgd"``: momentum 0.9, weight decay 1e-4, with ``lr=0.1``
its Glint360K schedule) and its backbone learns at 0.1× the hash layer's rate when fine-tuning
(``backbone_lr_ratio``, Sec. 5.2); the default stays Adam at 1e-3, as our backbones are
pre-trained here from scratch. Not followed, by choice: the released code's gradient clipping
at norm 5 and its N(0, 1) initial branch weights (ours N(0, 0.01)).

Measured here after these two changes (seed 0): digits, 32 bits, 10 epochs, mAP@all 0.996 (0.992
with m = 0.2 for L_cls too); the synthetic 2,000-class set at 16 bits (notebook 05), 0.722
(0.728).
"""
from __future__ import annotations

import dataclasses
import heapq
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import nn

from ..backbones import make_backbone
from ..errors import InvalidParameter
from ..validation import check_float, check_int
from . import register
from ._deep import DEEP_OPTIONS, LOG_EVERY, DeepQuantizer, StepWindow
from .base import Option, check_bits
from .pq import PQ

LABEL_SOURCES = ("auto", "class_means", "instances", "bernoulli")
LABEL_FEATURES = ("pretrained", "input")
MARGIN_KINDS = ("cosface", "arcface")
OPTIMIZERS = ("adam", "sgd")
SGD_MOMENTUM, SGD_WEIGHT_DECAY = 0.9, 1e-4  # insightface's SGD, which the paper keeps (Sec. 5.2, supplement)


# =========================================================================== label generation
def class_means(F: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average feature per class: (classes (C,) sorted labels, means (C, D) float32, counts (C,) int64).

    F: (n, D) features; y: (n,) integer labels. Row c of ``means`` is the mean of F[y == classes[c]].
    """
    classes, inverse = np.unique(y, return_inverse=True)
    sums = np.zeros((len(classes), F.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, F)
    counts = np.bincount(inverse, minlength=len(classes)).astype(np.int64)
    return classes, (sums / counts[:, None]).astype(np.float32), counts


def _unit_rows(A: np.ndarray) -> np.ndarray:
    """Rows of A (n, D) scaled to unit L2 norm, float32 (all-zero rows stay zero)."""
    A = np.asarray(A, dtype=np.float32)
    return A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), np.finfo(np.float32).tiny)


def code_costs(means: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Per-subspace quantization errors (C, M, K) float64: ||mean_c,m − codebook_m,k||².

    means: (C, D); codebooks: (M, K, D/M). The error of a code tuple (k_1..k_M) is the sum
    over m of ``costs[c, m, k_m]``.
    """
    M, K, ds = codebooks.shape
    sub = means.reshape(len(means), M, ds).astype(np.float64)
    cb = np.asarray(codebooks, dtype=np.float64)
    return ((sub[:, :, None, :] - cb[None]) ** 2).sum(-1)


def duplicate_count(codes: np.ndarray) -> int:
    """How many classes share their label with an earlier class: C − (number of distinct rows)."""
    return int(len(codes) - len(np.unique(codes, axis=0)))


def _best_free_tuple(cost: np.ndarray, occupied: set) -> tuple[tuple[int, ...], float]:
    """The code tuple with the lowest total error Σ_m cost[m, k_m] that is not in ``occupied``.

    cost: (M, K) one class's per-subspace errors. Tuples are enumerated in exactly increasing
    total error by a best-first walk over per-subspace ranks (the multi-sequence algorithm of
    the inverted multi-index), so only the few tuples cheaper than the answer are visited,
    never the K^M grid.
    """
    M, K = cost.shape
    order = np.argsort(cost, axis=1, kind="stable")  # order[m][r]: the r-th cheapest codeword
    ranked = np.take_along_axis(cost, order, axis=1)
    start = (0,) * M
    heap = [(float(ranked[np.arange(M), start].sum()), start)]
    seen = {start}
    while heap:
        total, ranks = heapq.heappop(heap)
        code = tuple(int(order[m, r]) for m, r in enumerate(ranks))
        if code not in occupied:
            return code, total
        for m in range(M):
            if ranks[m] + 1 < K:
                nxt = ranks[:m] + (ranks[m] + 1,) + ranks[m + 1:]
                if nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, (total - ranked[m, ranks[m]] + ranked[m, ranks[m] + 1], nxt))
    raise InvalidParameter("every code tuple is taken: K^M is smaller than the number of classes")  # pragma: no cover


def resolve_duplicates(codes: np.ndarray, costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique labels: (codes (C, M) int64 with no repeated row, moved (C,) bool).

    codes: (C, M) the PQ labels, possibly repeated; costs: (C, M, K) from :func:`code_costs`.
    Sec. 4.2: a duplicate is moved "to the position with the lowest quantization error, provided
    that the position is not already occupied by another PQ code". Where the paper is silent we
    chose: in each group sharing a label, the class with the lowest error keeps it; the others
    are moved one at a time in order of increasing error at their original label (the best-fitting
    first), each to the cheapest tuple still free at that moment (:func:`_best_free_tuple`).
    """
    codes = np.asarray(codes, dtype=np.int64).copy()
    C, M = codes.shape
    err = costs[np.arange(C)[:, None], np.arange(M)[None, :], codes].sum(1)  # (C,)
    keep_order = np.lexsort((err,) + tuple(codes[:, m] for m in reversed(range(M))))
    occupied: set = set()
    movers = []
    for c in keep_order:  # grouped by code, lowest error first within a group
        key = tuple(codes[c].tolist())
        if key in occupied:
            movers.append(c)
        else:
            occupied.add(key)
    moved = np.zeros(C, dtype=bool)
    for c in sorted(movers, key=lambda i: (err[i], i)):
        code, _ = _best_free_tuple(costs[c], occupied)
        occupied.add(code)
        codes[c] = code
        moved[c] = True
    return codes, moved


def auto_min_hamming(n_classes: int, n_bits: int) -> int:
    """The least Hamming distance :func:`bernoulli_labels` keeps between class labels when none is
    given: the largest d ≤ B/4 such that the C Hamming balls of radius d − 1 around the labels
    cover at most a quarter of the 2^B labels of B = M·log2 K bits (so that random redraws find a
    free label quickly); at least 1 (distinct labels). Our rule: OrthoHash asks for "sufficient
    hamming distance" between its Bernoulli codes and FPPQ adopts it (Sec. 5.4) without a number.
    E.g. C = 1000 classes: 32 bits → 6, 16 bits → 1."""
    best = 1
    for d in range(2, max(1, n_bits // 4) + 1):
        ball = sum(math.comb(n_bits, i) for i in range(d))  # labels within d − 1 bits of one label
        if n_classes * ball > 2 ** n_bits / 4:
            break
        best = d
    return best


def bernoulli_labels(n_classes: int, n_subspaces: int, n_codewords: int, rng: np.random.Generator,
                     min_hamming: int | None = None, max_draws: int = 10_000) -> np.ndarray:
    """Random labels (C, M) int64 at least ``min_hamming`` bits apart: OrthoHash's Bernoulli(0.5)
    codes, cut into segments (Sec. 5.4).

    Each class draws M·log2 K fair bits; a draw closer than ``min_hamming`` bits to a label already
    given (1: equal to one, the non-redundancy of Sec. 5.3) is redrawn, at most ``max_draws``
    times per class; None uses :func:`auto_min_hamming`. Each block of log2 K bits is read as a
    big-endian integer, the label digit k_m. K must be a power of two. Cost O(C² · M log2 K) bit
    comparisons: fine for thousands of classes, not for Glint360K's 360k.
    """
    b = int(round(math.log2(n_codewords)))
    if 2 ** b != n_codewords:
        raise InvalidParameter(f"label_source='bernoulli' needs K to be a power of two; got n_codewords={n_codewords}")
    n_bits = n_subspaces * b
    d = auto_min_hamming(n_classes, n_bits) if min_hamming is None else int(min_hamming)
    weights = (1 << np.arange(b - 1, -1, -1)).astype(np.int64)
    bits = np.empty((n_classes, n_bits), dtype=np.uint8)
    for c in range(n_classes):
        for _ in range(max_draws):
            draw = rng.integers(0, 2, size=n_bits, dtype=np.uint8)
            if c == 0 or int((bits[:c] != draw).sum(1).min()) >= d:
                bits[c] = draw
                break
        else:
            raise InvalidParameter(f"min_hamming={d}: no label {d} bits away from the {c} labels already drawn after "
                                   f"{max_draws} draws ({n_classes} classes in {n_bits} bits); lower min_hamming or raise M or K")
    return (bits.reshape(n_classes, n_subspaces, b) * weights).sum(-1).astype(np.int64)


@dataclass
class LabelResult:
    """Class-level PQ labels and how they were made (Sec. 4.2).

    classes: (C,) the class ids, in label-row order; codes: (C, M) int64 final unique labels;
    initial_codes: (C, M) the PQ encoding of the class means before duplicates were moved
    (equal to ``codes`` for Bernoulli labels); moved: (C,) bool; means: (C, D) class means;
    codebooks: (M, K, D/M) the label PQ's codebooks (None for Bernoulli); source: which path
    ran ("class_means", "instances" or "bernoulli"); fallback: True when Bernoulli labels
    replaced PQ labels because their duplicate rate exceeded the threshold; pq_duplicates: how
    many classes shared their PQ label before resolution (0 for Bernoulli-only labels).
    """

    classes: np.ndarray
    codes: np.ndarray
    initial_codes: np.ndarray
    moved: np.ndarray
    means: np.ndarray
    codebooks: np.ndarray | None
    source: str
    fallback: bool = False
    pq_duplicates: int = 0

    @property
    def n_classes(self) -> int:
        return int(len(self.classes))

    @property
    def duplicates_before(self) -> int:
        """Classes that shared their PQ label with another class before resolution."""
        return int(self.pq_duplicates)

    @property
    def duplicates_after(self) -> int:
        return duplicate_count(self.codes)

    @property
    def duplicate_rate_before(self) -> float:
        """duplicates_before / C: the fraction of classes that had to move (the paper's "duplicate rate")."""
        return self.duplicates_before / max(1, self.n_classes)

    @property
    def duplicate_rate_after(self) -> float:
        return self.duplicates_after / max(1, self.n_classes)

    def classes_per_codeword(self, n_codewords: int) -> np.ndarray:
        """(M, K) int64: how many classes' labels use codeword k in subspace m."""
        M = self.codes.shape[1]
        out = np.zeros((M, n_codewords), dtype=np.int64)
        for m in range(M):
            out[m] = np.bincount(self.codes[:, m], minlength=n_codewords)
        return out

    def summary(self) -> dict:
        """JSON-ready description: source, counts and rates before/after resolution."""
        return {"source": self.source, "fallback": bool(self.fallback), "n_classes": self.n_classes,
                "duplicates_before": self.duplicates_before, "duplicates_after": self.duplicates_after,
                "duplicate_rate_before": self.duplicate_rate_before, "duplicate_rate_after": self.duplicate_rate_after,
                "moved": int(self.moved.sum())}


def make_pq_labels(F: np.ndarray, y: np.ndarray, n_subspaces: int, n_codewords: int, *, source: str = "auto",
                   fallback_duplicate_rate: float | None = None, n_iter: int = 25, random_state: int = 0,
                   normalize: bool = False, min_hamming: int | None = None) -> LabelResult:
    """Class-level PQ labels for features F (n, D) with labels y (n,) (Sec. 4.2, Eq. 8; Sec. 5.4).

    source: "class_means" (PQ trained on the C class means; needs C ≥ K), "instances" (PQ
    trained on all n instance features, then the class means are encoded — the ImageNet100 path),
    "bernoulli" (OrthoHash codes, no features used) or "auto" (class_means when C ≥ K, else
    instances). fallback_duplicate_rate: when the PQ labels' duplicate rate before resolution
    exceeds it, use Bernoulli labels instead (the ImageNet1K path); None never falls back.
    The label PQ is our :class:`~explorer.methods.pq.PQ` (faiss-style Lloyd, ``n_iter`` iterations);
    on the instances path it trains on at most 256·K instances, faiss's default cap (the paper
    does not say how many it used), on the class-means path on all C means.
    normalize: L2-normalise every feature row, then every class mean, before PQ — what the
    authors' released pipeline does with the backbone features (the paper is silent); the label
    PQ then works on the unit sphere where the normalised codewords are trained.
    min_hamming: the Bernoulli labels' least Hamming distance (:func:`bernoulli_labels`).
    """
    if normalize:
        F = _unit_rows(F)
    classes, means, _ = class_means(F, y)
    if normalize:
        means = _unit_rows(means)
    C = len(classes)
    rng = np.random.default_rng(random_state)
    if source == "bernoulli":
        codes = bernoulli_labels(C, n_subspaces, n_codewords, rng, min_hamming)
        return LabelResult(classes, codes, codes.copy(), np.zeros(C, bool), means, None, "bernoulli")
    if source == "auto":
        source = "class_means" if C >= n_codewords else "instances"
    train = means if source == "class_means" else F
    pq = PQ(n_subspaces, n_codewords, n_iter=n_iter, random_state=random_state,
            max_points_per_codeword=None if source == "class_means" else 256).fit(train)
    initial = pq.encode(means).astype(np.int64)
    before = duplicate_count(initial)
    if fallback_duplicate_rate is not None and before / C > fallback_duplicate_rate:
        codes = bernoulli_labels(C, n_subspaces, n_codewords, rng, min_hamming)
        return LabelResult(classes, codes, initial, np.zeros(C, bool), means, pq.codebooks_, source,
                           fallback=True, pq_duplicates=before)
    codes, moved = resolve_duplicates(initial, code_costs(means, pq.codebooks_))
    return LabelResult(classes, codes, initial, moved, means, pq.codebooks_, source, pq_duplicates=before)


# =========================================================================== model
def margin_logits(cos: torch.Tensor, target: torch.Tensor, scale: float, margin: float, kind: str) -> torch.Tensor:
    """Logits s·cos θ with the target's replaced by s·(cos θ − m) (CosFace) or s·cos(θ + m) (ArcFace).

    cos: (..., K) cosines; target: (...) int64 class per row. Eq. 6 of the paper.
    """
    cos_t = cos.gather(-1, target[..., None])
    if kind == "cosface":
        adj = cos_t - margin
    else:
        sin_t = (1.0 - cos_t.pow(2)).clamp_min(1e-7).sqrt()
        adj = cos_t * math.cos(margin) - sin_t * math.sin(margin)
    return scale * cos.scatter(-1, target[..., None], adj)


class FPPQNet(nn.Module):
    """Backbone + PQ branch (M bias-free K-way sub-branches) + class head (Fig. 1 of the paper).

    ``forward(x)`` returns (cos_pq (b, M, K), cos_cls (b, C)): cosines between each normalised
    segment F̃_m and the normalised branch weights w̃_mk (Eq. 5), and between the normalised
    whole feature and the normalised class weights. ``embed(x)`` is the (b, D) retrieval feature
    (segment-normalised or raw, see the module docstring).
    """

    def __init__(self, backbone: nn.Module, dim: int, n_subspaces: int, n_codewords: int, n_classes: int,
                 segment_normalize: bool):
        super().__init__()
        self.backbone = backbone
        self.n_subspaces = n_subspaces
        self.segment_normalize = segment_normalize
        self.branch_weight = nn.Parameter(torch.randn(n_subspaces, n_codewords, dim // n_subspaces) * 0.01)
        self.class_weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)

    def _segments(self, F: torch.Tensor) -> torch.Tensor:
        return nnf.normalize(F.reshape(len(F), self.n_subspaces, -1), dim=-1)  # (b, M, D/M)

    def codebooks(self) -> torch.Tensor:
        """Normalised branch weights w̃_mk = w_mk / ||w_mk||, (M, K, D/M): the PQ codebook C (Sec. 4.3)."""
        return nnf.normalize(self.branch_weight, dim=-1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        F = self.backbone(x)
        return self._segments(F).reshape(len(F), -1) if self.segment_normalize else F

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        F = self.backbone(x)
        cos_pq = torch.einsum("bmd,mkd->bmk", self._segments(F), self.codebooks())
        cos_cls = nnf.normalize(F, dim=-1) @ nnf.normalize(self.class_weight, dim=-1).T
        return cos_pq, cos_cls


# =========================================================================== quantizer
@register
class FPPQ(DeepQuantizer):
    """FPPQ: class-level PQ labels learned by M CosFace sub-branches; codebook = branch weights.

    Parameters
    ----------
    n_subspaces, n_codewords : M and K (the paper: K = 256, M = bits / 8).
    embedding_dim : D, the backbone feature size (M must divide it).
    epochs : training epochs with L = L_cls + L_pq.
    log_every : mini-batches between two Steps of the training phase (each epoch also ends with one).
    batch_size, lr : Adam mini-batches; lr decays linearly to 0 over the epochs (the paper's
        Glint360K schedule, Sec. 5.3; the paper uses SGD there and lr 1e-4 fine-tuning on
        ImageNet — we chose Adam at 1e-3 because our backbones start from scratch).
    backbone, image_shape : see :mod:`explorer.backbones` ("linear"/"mlp" for vector features).
    scale, margin : s and m of the PQ branches' margin loss L_pq (paper: 64 and 0.2, Sec. 5.2).
    cls_margin : m of L_cls (0.4). The paper gives one margin, 0.2, and says it otherwise keeps
        insightface's default training settings; the authors' released code uses 0.2 for the PQ
        branches only and trains L_cls (and the pre-trained model) with insightface's CosFace
        default, m = 0.4, so we do too.
    margin_kind : "cosface" (s·(cos θ − m), the loss the text names) or "arcface" (s·cos(θ + m),
        Eq. 6 as printed). The paper's Eq. 6 writes cos(θ + margin) but cites CosFace.
    cls_weight : weight of L_cls in L = cls_weight·L_cls + L_pq (Eq. 7 has 1; 0 switches the class
        head off, an ablation). The paper leaves L_cls as "any classification loss"; we use the
        same margin loss over the normalised whole feature with C normalised class weights.
    pretrain_epochs : epochs of L_cls alone before the labels are made. The paper takes class
        means from a pre-trained model and fine-tunes it; our backbones start random, so we
        pre-train them here (0 = none).
    label_features : "pretrained" (class means of the backbone's features after pre-training,
        as the paper; each feature and each mean L2-normalised, as the authors' released code
        does) or "input" (class means of the standardised input vectors, as they are — frozen,
        pre-computed features such as PCA or descriptors; needs M | d).
    label_source : "auto", "class_means", "instances" or "bernoulli" (see :func:`make_pq_labels`).
    fallback_duplicate_rate : switch to Bernoulli labels when the PQ labels' duplicate rate before
        resolution exceeds this (the ImageNet1K case); None (default) never does.
    min_hamming : least Hamming distance between Bernoulli labels (:func:`bernoulli_labels`); None
        picks it from C and M·log2 K (:func:`auto_min_hamming`).
    segment_normalize : what ``transform`` returns (module docstring; False, the paper's "F", by
        default); codes do not depend on it.
    backbone_lr_ratio : the backbone's learning rate over the hash layer's during the training
        phase (paper: 0.1, Sec. 5.2); pre-training, which stands in for the paper's pre-trained
        model, trains every layer at ``lr``.
    optimizer : "adam" (default) or "sgd" (the paper's: momentum 0.9, weight decay 1e-4; pass
        lr=0.1 for its Glint360K schedule, decayed linearly to 0).

    Events: a ``pretrain`` note per pre-training epoch (L_cls); one ``labels`` note (the
    :meth:`LabelResult.summary` counts and rates, plus ``classes_per_codeword`` (M, K) of the
    labels); per epoch a ``usage`` note (``label_agreement``: fraction of training sub-vectors whose
    nearest codeword is their label digit; ``classes_per_codeword`` (M, K): distinct classes among
    the samples landing on each codeword); every ``log_every`` mini-batches and at each epoch's end
    a Step with losses ``total``, ``cls``, ``pq`` and the samples per codeword of the mini-batches
    since the previous Step. Pre-training reports no Steps; a stop during it is heard within one
    mini-batch too (mid-epoch it leaves no checkpoint to resume from). Codes and agreement in these events come from the epoch's own forward
    passes (train mode, weights moving during the epoch), which costs nothing extra; the last
    incomplete batch is dropped, so counts sum to slightly less than n.

    Fitted attributes: ``codebooks_`` (M, K, D/M) float32 unit codewords; ``labels_`` a
    :class:`LabelResult`; ``class_codes_`` (C, M) the labels; ``n_classes_`` C; ``history_``
    per-epoch dicts.

    Stop and checkpoints: a stop requested during pre-training ends the fit after that
    pre-training epoch, before the labels are made (no ``labels_`` then; ``codebooks_`` are the
    untrained branch weights); its checkpoint (step 0, phase "pretrain") resumes the pre-training.
    A checkpoint taken in the training phase holds the labels, so a resumed fit neither
    pre-trains nor makes labels again. Either way the resumed fit ends with the codes of an
    uninterrupted one with the same seed (bit-identical on CPU).
    """

    name = "fppq"
    title = "FPPQ (class-level PQ labels)"
    paper = "Liang, Zhang, Li & Wang, NeurIPS 2023"
    supervised = True
    codes_follow_classes = True
    has_soft_codes = False
    supports_checkpoint = True  # model, Adam, LR schedule, epoch, RNGs, plus phase and PQ labels
    param_choices = {**DeepQuantizer.param_choices, "margin_kind": MARGIN_KINDS, "label_features": LABEL_FEATURES,
                     "label_source": LABEL_SOURCES, "optimizer": OPTIMIZERS}
    cli_options = DEEP_OPTIONS + (
        Option("--scale", "scale", "s, the margin loss's scale (FPPQ: 64)", type=float),
        Option("--margin", "margin", "the margin m of L_pq (FPPQ: 0.2)", type=float),
        Option("--cls-margin", "cls_margin", "the margin m of L_cls (FPPQ's released code: 0.4)", type=float),
        Option("--margin-kind", "margin_kind", "cosface (default) or arcface", type=str),
        Option("--no-cls", "cls_weight", "drop the class-head loss L_cls", const=0.0),
        Option("--pretrain-epochs", "pretrain_epochs", "epochs of L_cls before making the PQ labels", type=int),
        Option("--label-features", "label_features", "pretrained (backbone) or input (raw vectors)", type=str),
        Option("--label-source", "label_source", "auto, class_means, instances or bernoulli", type=str),
        Option("--fallback-duplicate-rate", "fallback_duplicate_rate",
               "use Bernoulli labels when the PQ labels' duplicate rate exceeds this", type=float),
        Option("--min-hamming", "min_hamming", "least Hamming distance between Bernoulli class labels", type=int),
        Option("--segment-normalize", "segment_normalize",
               "transform returns segment-normalised features (the supplement's SegFnor row)", const=True),
        Option("--backbone-lr-ratio", "backbone_lr_ratio", "backbone lr / hash-layer lr when fine-tuning (paper: 0.1)",
               type=float),
        Option("--optimizer", "optimizer", "adam (default) or sgd (the paper's: momentum 0.9, weight decay 1e-4)",
               type=str),
    )

    def __init__(self, n_subspaces: int = 4, n_codewords: int = 256, *, embedding_dim: int = 64, epochs: int = 20,
                 batch_size: int = 128, lr: float = 1e-3, log_every: int = LOG_EVERY, backbone: str = "auto",
                 image_shape=None,
                 scale: float = 64.0, margin: float = 0.2, cls_margin: float = 0.4, margin_kind: str = "cosface",
                 cls_weight: float = 1.0,
                 pretrain_epochs: int = 3, label_features: str = "pretrained", label_source: str = "auto",
                 fallback_duplicate_rate: float | None = None, min_hamming: int | None = None,
                 segment_normalize: bool = False, backbone_lr_ratio: float = 0.1, optimizer: str = "adam",
                 random_state: int = 0, device: str = "cpu"):
        super().__init__(n_subspaces, n_codewords, random_state=random_state, device=device)
        self.embedding_dim = embedding_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.log_every = log_every
        self.lr = lr
        self.backbone = backbone
        self.image_shape = image_shape
        self.scale = scale
        self.margin = margin
        self.cls_margin = cls_margin
        self.margin_kind = margin_kind
        self.cls_weight = cls_weight
        self.pretrain_epochs = pretrain_epochs
        self.label_features = label_features
        self.label_source = label_source
        self.fallback_duplicate_rate = fallback_duplicate_rate
        self.min_hamming = min_hamming
        self.segment_normalize = segment_normalize
        self.backbone_lr_ratio = backbone_lr_ratio
        self.optimizer = optimizer

    # ----------------------------------------------------------------- validation
    @classmethod
    def grid_for_bits(cls, bits: int, dim: int) -> dict:
        """K=256, M=bits/8: Liang et al.'s "8 bits per segment" (16, 32, 64, 128 bits → M=2, 4, 8, 16).

        D is the default ``embedding_dim`` rounded down to a multiple of M. Raises :class:`InvalidParameter` naming ``bits`` when it is not a positive multiple of 8.
        """
        M = check_bits(bits, 8, "8 bits per segment, K=256") // 8
        return {"n_subspaces": M, "n_codewords": 256, "embedding_dim": cls._embedding_for(M)}

    def _validate(self, X, y):
        super()._validate(X, y)
        check_float(self.scale, "scale (s)", low=0.0)
        check_float(self.margin, "margin", low=0.0)
        check_float(self.cls_margin, "cls_margin", low=0.0)
        check_float(self.cls_weight, "cls_weight", low=0.0)
        check_int(self.pretrain_epochs, "pretrain_epochs", low=0)
        check_float(self.backbone_lr_ratio, "backbone_lr_ratio", low=0.0)
        if self.min_hamming is not None:
            check_int(self.min_hamming, "min_hamming", low=1, high=self.n_subspaces * int(math.log2(max(2, self.n_codewords))),
                      fix="it counts bits of the M·log2 K-bit label, or None for the automatic distance")
        if self.fallback_duplicate_rate is not None:
            check_float(self.fallback_duplicate_rate, "fallback_duplicate_rate", low=0.0, high=1.0)
        M, K = self.n_subspaces, self.n_codewords
        if self.label_features == "input" and self.label_source != "bernoulli" and X.shape[1] % M:
            raise InvalidParameter(f"label_features='input' runs PQ on the input vectors, but n_subspaces (M)={M} does "
                                   f"not divide d={X.shape[1]}; use label_features='pretrained' or an M dividing d")
        C = len(np.unique(y))
        if C < 2:
            raise InvalidParameter(f"y holds {C} class; FPPQ needs at least 2 classes to learn class-level labels")
        if float(K) ** M < C:
            raise InvalidParameter(f"K^M = {K}^{M} code tuples cannot give {C} classes unique labels; raise M or K")
        source = self.label_source if self.label_source != "auto" else ("class_means" if C >= K else "instances")
        if source == "class_means" and C < K:
            raise InvalidParameter(f"label_source='class_means' needs at least K={K} classes to run k-means on their "
                                   f"means; y has {C}. Use label_source='instances' (or 'auto')")
        if source == "instances" and len(X) < K:
            raise InvalidParameter(f"label_source='instances' trains PQ on the n={len(X)} instances, fewer than "
                                   f"K={K}; lower n_codewords (K)")

    # ----------------------------------------------------------------- training
    def _loss(self, x, target_pq, target_cls, *, with_pq: bool):
        """(total, L_cls, L_pq, hard codes (b, M)) on one batch; Eqs. 6–7."""
        cos_pq, cos_cls = self.model_(x)
        l_cls = nnf.cross_entropy(margin_logits(cos_cls, target_cls, self.scale, self.cls_margin, self.margin_kind),
                                  target_cls)
        if not with_pq:
            return l_cls, l_cls, None, None
        logits = margin_logits(cos_pq, target_pq, self.scale, self.margin, self.margin_kind)
        l_pq = nnf.cross_entropy(logits.reshape(-1, self.n_codewords), target_pq.reshape(-1))  # mean over B·M
        return self.cls_weight * l_cls + l_pq, l_cls, l_pq, cos_pq.argmax(-1)

    def _fine_tune_optimizer(self) -> torch.optim.Optimizer:
        """The training phase's optimizer: two parameter groups, the backbone at lr ·
        ``backbone_lr_ratio`` and the hash layer (PQ branches) with the class head at lr — "the
        backbone learning rate was always 0.1 times that of the hash layer" (Sec. 5.2). Adam, or
        SGD with insightface's momentum 0.9 and weight decay 1e-4 (the supplement's Glint360K
        setting, with lr 0.1 decayed linearly to 0 by the schedule in ``_fit``)."""
        lr = float(self.lr)
        groups = [{"params": list(self.model_.backbone.parameters()), "lr": lr * float(self.backbone_lr_ratio)},
                  {"params": [self.model_.branch_weight, self.model_.class_weight], "lr": lr}]
        if self.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=lr, momentum=SGD_MOMENTUM, weight_decay=SGD_WEIGHT_DECAY)
        return torch.optim.Adam(groups, lr=lr)

    def _label_features(self, X: np.ndarray, Xt: torch.Tensor) -> np.ndarray:
        if self.label_features == "input":
            return Xt.cpu().numpy()
        was = self.segment_normalize
        self.segment_normalize = False  # class means of the raw backbone feature F
        try:
            return self.transform(X)
        finally:
            self.segment_normalize = was

    def _make_model(self, dim: int, gen: torch.Generator) -> FPPQNet:
        backbone = make_backbone(self.backbone, dim, self.embedding_dim, self.image_shape_)
        return FPPQNet(backbone, self.embedding_dim, self.n_subspaces, self.n_codewords, self.n_classes_,
                       self.segment_normalize).to(self.device_)

    def _fit(self, X, y, run):
        gen, _ = self._generators()
        Xt = self._prepare(X)
        classes, y_idx = np.unique(y, return_inverse=True)
        M, K = self.n_subspaces, self.n_codewords
        self.n_classes_ = len(classes)
        for stale in ("labels_", "class_codes_"):
            self.__dict__.pop(stale, None)
        self.history_ = []
        self.model_ = self._make_model(X.shape[1], gen)
        self.codebooks_ = self.model_.codebooks().detach().cpu().numpy()
        yt = torch.from_numpy(y_idx.astype(np.int64)).to(self.device_)
        # A checkpoint is in phase "pretrain" (epochs of L_cls done, no labels yet) or "train" (labels made).
        self._phase, self._pretrain_epochs_done = "pretrain", 0
        resume = getattr(self, "_resume_state", None)
        if resume is None or resume["extra"]["phase"] == "pretrain":
            # Pre-training: the paper's labels come from a pre-trained model's features (Sec. 4.2).
            opt = (torch.optim.SGD(self.model_.parameters(), lr=self.lr, momentum=SGD_MOMENTUM, weight_decay=SGD_WEIGHT_DECAY)
                   if self.optimizer == "sgd" else torch.optim.Adam(self.model_.parameters(), lr=self.lr))
            self._resume_training(opt)  # resuming here restores the pre-training epochs done
            for epoch in range(self._pretrain_epochs_done + 1, self.pretrain_epochs + 1):
                self.model_.train()
                total = 0.0
                n_batches = 0
                per_epoch = self._batches_per_epoch(len(Xt))
                for idx in self._batches(len(Xt), gen):
                    loss, *_ = self._loss(Xt[idx], None, yt[idx], with_pq=False)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += loss.item()
                    n_batches += 1
                    if n_batches < per_epoch and run.stop_requested():
                        # heard within one mini-batch; the weights moved part-way through an epoch, so this
                        # state is not resumable (no checkpoint: a resume restarts from the last one saved)
                        run.resumable = False
                        self.model_.eval()
                        return
                self._pretrain_epochs_done = epoch
                run.note("pretrain", f"pre-training epoch {epoch}/{self.pretrain_epochs}: L_cls {total / max(1, n_batches):.4f}",
                         epoch=epoch, cls=total / max(1, n_batches))
                if run.stop_requested():
                    # stop here, before the labels: a checkpoint of this state resumes the pre-training
                    # exactly; the model is usable (codes from the untrained branch weights)
                    self.model_.eval()
                    return

            # Class-level PQ labels (Algorithm 1, lines 2–3).
            F = self._label_features(X, Xt)
            self.labels_ = make_pq_labels(F, y, M, K, source=self.label_source,
                                          fallback_duplicate_rate=self.fallback_duplicate_rate, min_hamming=self.min_hamming,
                                          random_state=int(self.random_state or 0),
                                          normalize=self.label_features == "pretrained")

        # Training with L = L_cls + L_pq (Algorithm 1, lines 4–8); lr decays linearly to 0.
        self._phase = "train"
        opt = self._fine_tune_optimizer()
        n_batches = max(1, len(Xt) // min(self.batch_size, len(Xt)))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: max(0.0, 1.0 - i / (self.epochs * n_batches)))
        start = self._resume_training(opt, sched)  # resuming in this phase also restores the labels
        self.class_codes_ = self.labels_.codes
        s = self.labels_.summary()
        run.note("labels", f"{s['n_classes']} classes, labels from {s['source']}"
                 f"{' (Bernoulli fallback)' if s['fallback'] else ''}: {s['duplicates_before']} duplicates "
                 f"({s['duplicate_rate_before']:.1%}) before, {s['duplicates_after']} after, {s['moved']} moved",
                 classes_per_codeword=self.labels_.classes_per_codeword(K), **s)
        target_pq = torch.from_numpy(self.labels_.codes[y_idx]).to(self.device_)  # (n, M)
        seen_rows, seen_codes = [], []  # the epoch's rows and codes: label agreement and classes per codeword

        def epoch_end(epoch, losses):
            rows, codes = torch.cat(seen_rows).numpy(), torch.cat(seen_codes).numpy()
            seen_rows.clear(), seen_codes.clear()
            agreement = float((codes == self.labels_.codes[y_idx[rows]]).mean())
            self.history_.append({"epoch": epoch, **losses, "label_agreement": agreement})
            if run.observed:
                per_class = self._classes_per_codeword(codes, y_idx[rows])
                run.note("usage", f"epoch {epoch}: {agreement:.1%} of sub-codes hit their label; "
                         f"{per_class.max()} classes at most on one codeword",
                         epoch=epoch, label_agreement=agreement, classes_per_codeword=per_class)

        window = StepWindow(M, K)
        for _, idx in self._train_batches(run, len(Xt), gen, start, window, on_epoch_end=epoch_end,
                                          sample=lambda: self._sample(X)):
            loss, l_cls, l_pq, codes = self._loss(Xt[idx], target_pq[idx], yt[idx], with_pq=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen_rows.append(idx.cpu())
            seen_codes.append(codes.detach().cpu())
            window.add({"total": loss.item(), "cls": l_cls.item(), "pq": l_pq.item()}, codes=codes)
        self.codebooks_ = self.model_.codebooks().detach().cpu().numpy().astype(np.float32)
        self.model_.eval()

    # ----------------------------------------------------------------- checkpoints
    def _extra_state(self) -> dict:
        """The deep-method state plus FPPQ's own: the phase ("pretrain" with ``pretrain_epochs_done``,
        or "train"), the number of classes C and the PQ labels (:class:`LabelResult` as a dict)."""
        labels = getattr(self, "labels_", None)
        return {**super()._extra_state(), "phase": self._phase, "pretrain_epochs_done": int(self._pretrain_epochs_done),
                "n_classes": int(self.n_classes_), "labels": None if labels is None else dataclasses.asdict(labels)}

    def _load_extra_state(self, extra: dict) -> None:
        self._phase, self._pretrain_epochs_done = extra["phase"], int(extra["pretrain_epochs_done"])
        self.n_classes_ = int(extra["n_classes"])  # before the network is built: its class head has C rows
        if extra["labels"] is not None:
            self.labels_ = LabelResult(**{k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v
                                          for k, v in extra["labels"].items()})
            self.class_codes_ = self.labels_.codes
        super()._load_extra_state(extra)

    def _sample(self, X: np.ndarray, size: int = 300):
        """EmbeddingSample of ``size`` fixed rows of X, embedding only those rows."""
        rows = np.linspace(0, len(X) - 1, num=min(size, len(X))).astype(np.int64)
        return self._embedding_sample(self.transform(X[rows]), size)

    def _classes_per_codeword(self, codes: np.ndarray, y_idx: np.ndarray) -> np.ndarray:
        """(M, K) int64: distinct classes among the samples whose sub-code m is k."""
        M, K = self.n_subspaces, self.n_codewords
        out = np.zeros((M, K), dtype=np.int64)
        for m in range(M):
            pairs = np.unique(codes[:, m].astype(np.int64) * (int(y_idx.max()) + 1) + y_idx)
            out[m] = np.bincount(pairs // (int(y_idx.max()) + 1), minlength=K)
        return out

    # ----------------------------------------------------------------- retrieval
    def transform(self, X) -> np.ndarray:
        """Retrieval features (n, D) float32: the backbone feature F with each of its M segments
        scaled to unit norm when ``segment_normalize`` (read at call time, so it can be switched
        after fitting), else F itself. Codes are the same either way (Eq. 11)."""
        if hasattr(self, "model_"):
            self.model_.segment_normalize = bool(self.segment_normalize)
        return super().transform(X)

    def search(self, queries, codes, k: int = 100, *, symmetric: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(distances (nq, k) float32, ids (nq, k) int64) of the k nearest coded vectors.

        symmetric=False: asymmetric search, Eq. 10 (query sub-vectors against codewords).
        symmetric=True: symmetric search, Eq. 9 (the query is encoded too; codeword-to-codeword
        squared L2 tables). ⟨·⟩ is squared L2 in both, the "Euclidean" choice of Eq. 11.
        """
        if not symmetric:
            return super().search(queries, codes, k)
        from ..search import sdc_search
        return sdc_search(self, self.encode(queries), codes, k)

    def extra_report(self, ds, evaluation: dict) -> dict:
        """Report keys: ``duplicate_rate`` (of the PQ labels before resolution — the rate the paper
        quotes), ``duplicate_rate_after`` (0 unless K^M is too small), ``label_generation``
        (:meth:`LabelResult.summary`), ``map_symmetric`` (mAP@all with Eq. 9 search; the base
        report's ``map`` is mAP@all with the asymmetric search of Eq. 10) and ``map_at_1000``
        (asymmetric, the top 1,000 of each ranking: the paper's Glint360K/ImageNet protocol)."""
        if getattr(self, "labels_", None) is None:  # stopped during pre-training: no labels yet
            return {"duplicate_rate": None, "duplicate_rate_after": None, "label_generation": None, "map_symmetric": None,
                    "map_at_1000": None}
        out = {"duplicate_rate": self.labels_.duplicate_rate_before,
               "duplicate_rate_after": self.labels_.duplicate_rate_after,
               "label_generation": self.labels_.summary(), "map_symmetric": None, "map_at_1000": None}
        if ds.queries is not None and ds.labels is not None and ds.query_labels is not None:
            from .. import metrics
            from ..search import sdc_search_blocks
            codes = evaluation["codes"]
            block = metrics.queries_per_block(len(codes))
            (out["map_at_1000"],), _ = metrics.map_in_blocks(
                (ids for _, ids in self.search_blocks(ds.queries, codes, min(1000, len(codes)), block=block)),
                ds.query_labels, ds.labels, ks=(1000,))
            # the whole base ranked for a block of queries at a time, as evaluate ranks it for "map"
            rankings = (ids for _, ids in sdc_search_blocks(self, self.encode(ds.queries), codes, len(codes),
                                                              block=metrics.queries_per_block(len(codes))))
            (out["map_symmetric"],), _ = metrics.map_in_blocks(rankings, ds.query_labels, ds.labels)
        return out
