"""Product quantization (Jégou, Douze & Schmid, "Product Quantization for Nearest Neighbor
Search", TPAMI 2011).

The d-dimensional space is cut into M sub-spaces of d/M dimensions; each gets K codewords by
k-means on its sub-vectors; a vector is stored as the M indices of its nearest codewords.
faiss's ``ProductQuantizer`` is the reference: same initialisation (K distinct random training
points per subspace), same empty-cluster repair, same training subsample (at most
``max_points_per_codeword`` · K vectors), 25 Lloyd iterations by default.
"""
from __future__ import annotations

import numpy as np
import torch

from ..kmeans import init_random_points, lloyd, split_into_subspaces
from ..validation import METRICS
from . import register
from .base import Option, Quantizer


def subsample(X: np.ndarray, max_points: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_points`` rows of X (n, d), drawn without replacement (faiss's training cap)."""
    if max_points is None or len(X) <= max_points:
        return X
    return X[np.sort(rng.choice(len(X), size=max_points, replace=False))]


@register
class PQ(Quantizer):
    """Product quantizer trained with batched Lloyd k-means.

    Parameters
    ----------
    n_subspaces : M, number of sub-spaces; must divide d.
    n_codewords : K, codewords per sub-space (K ≤ 65536; K ≤ 256 gives uint8 codes).
    n_iter : Lloyd iterations; each one is a training step (one event).
    init : ``"random"`` (faiss: K distinct training points) or ``"narrow"`` — every codeword
        starts at the same training sub-vector plus tiny noise, a deliberately bad start used to
        teach codebook collapse.
    repair_empty : give empty clusters a split of a populous one after each iteration (faiss
        does); switch off to watch a bad start stay collapsed.
    max_points_per_codeword : train on at most this many · K vectors (faiss: 256); None = all.
    metric : how search ranks, as faiss's ``IndexPQ(d, M, nbits, metric)``: ``"l2"`` (squared
        L2), ``"ip"`` (inner product <q, x̂>, greater is nearer, ``METRIC_INNER_PRODUCT``) or
        ``"cosine"`` (the inner product of L2-normalised vectors: training, encoding and queries
        all see unit rows). The codebooks are k-means (L2) codebooks whatever the metric, as
        faiss trains them; Jégou et al. define only L2, the inner-product tables are their ADC tables
        with the dot product in place of the distance.

    Fitted attributes: ``codebooks_`` (M, K, d/M) float32.
    """

    name = "pq"
    title = "Product quantization"
    paper = "Jégou, Douze & Schmid, TPAMI 2011"
    supports_checkpoint = True  # state: codebooks_, step, RNG states (see Quantizer.state_dict)
    param_choices = {"init": ("random", "narrow"), "metric": METRICS}
    cli_options = (
        Option("--metric", "metric", "search metric: l2 (default), ip (inner product) or cosine", type=str),
        Option("--init", "init", "codebook initialisation: random (faiss) or narrow (bad start, for collapse demos)", type=str),
        Option("--no-repair", "repair_empty", "do not repair empty clusters", const=False),
    )

    def __init__(self, n_subspaces: int = 8, n_codewords: int = 256, *, n_iter: int = 25, init: str = "random",
                 repair_empty: bool = True, max_points_per_codeword: int | None = 256, metric: str = "l2",
                 random_state: int = 0, device: str = "cpu"):
        super().__init__(n_subspaces, n_codewords, random_state=random_state, device=device)
        self.n_iter = n_iter
        self.init = init
        self.repair_empty = repair_empty
        self.max_points_per_codeword = max_points_per_codeword
        self.metric = metric

    def _validate(self, X, y):
        super()._validate(X, y)
        from ..validation import check_int
        check_int(self.n_iter, "n_iter", low=1)

    def _init_codebooks(self, Xs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.init == "narrow":
            M, n, ds = Xs.shape
            pick = int(torch.randint(n, (1,), generator=gen))
            base = Xs[:, pick:pick + 1, :].expand(M, self.n_codewords, ds)
            scale = 1e-3 * (Xs.std() + 1e-6)
            return (base + scale * torch.randn((M, self.n_codewords, ds), generator=gen).to(Xs)).contiguous()
        return init_random_points(Xs, self.n_codewords, gen)

    def _train_codebooks(self, X: np.ndarray, run, *, centroids: torch.Tensor | None = None, n_iter: int | None = None,
                         step_offset: int = 0, emit: bool = True, rng=None, gen=None, resume: bool = False) -> torch.Tensor:
        """Lloyd on X (n, d) from ``centroids`` (or a fresh init); sets ``codebooks_``; returns the centroids.

        With ``resume``, the subsample is drawn as in the original fit, then the centroids, the
        step and the RNG states come from the checkpoint, so the remaining iterations repeat
        those of an uninterrupted fit exactly.
        """
        if gen is None:
            gen, rng = self._generators()
        cap = None if self.max_points_per_codeword is None else self.max_points_per_codeword * self.n_codewords
        Xt = torch.from_numpy(subsample(X, cap, rng)).to(self.device_)
        Xs = split_into_subspaces(Xt, self.n_subspaces)
        if resume:
            step_offset = self._resume_from()
            n_iter = self.n_iter - step_offset
            centroids = torch.from_numpy(np.array(self.codebooks_, dtype=np.float32)).to(self.device_)
            self._restore_rngs(gen, rng)
        C = self._init_codebooks(Xs, gen) if centroids is None else centroids
        self.codebooks_ = C.cpu().numpy()
        split_rng = rng if self.repair_empty else None
        for state in lloyd(Xs, C, self.n_iter if n_iter is None else n_iter, split_rng):
            self.codebooks_ = C.cpu().numpy()
            if emit and not run.step(step_offset + state.iteration, {"total": state.mse}, n_codewords=self.n_codewords,
                                     usage=state.counts.cpu().numpy().astype(np.int64),
                                     sample=lambda: self._embedding_sample(X)):
                break
        self.codebooks_ = C.cpu().numpy().copy()
        return C

    def _fit(self, X, y, run):
        self._train_codebooks(self._metric_space(X), run, resume=self._resume_state is not None)

    def distance_tables(self, queries) -> np.ndarray:
        """Asymmetric distance tables (nq, M, K) float32: squared L2 from each (transformed) query
        sub-vector to each codeword (Jégou et al., Eq. 13), computed by faiss's
        ``ProductQuantizer.compute_distance_tables`` — the tables faiss's own ``IndexPQ`` search
        builds (their last bits depend on which queries share the call, as torch's do: compute
        them once, as :meth:`search_blocks` does) — for K a power of two; torch's (the base
        class's) otherwise."""
        import faiss
        from ..search import faiss_pq
        M, K, ds = np.shape(self.codebooks_)
        if K & (K - 1) or self.metric != "l2":
            return super().distance_tables(queries)
        Q = np.ascontiguousarray(self.transform(queries), dtype=np.float32)
        tables = np.empty((len(Q), M, K), dtype=np.float32)
        index = faiss_pq(M * ds, M, K, self.codebooks_)
        index.pq.compute_distance_tables(len(Q), faiss.swig_ptr(Q), faiss.swig_ptr(tables))
        return tables
