"""Optimized product quantization, non-parametric variant (Ge, He, Ke & Sun, "Optimized
Product Quantization", TPAMI 2014, Sec. 3.1).

Alternates two steps on the rotated data Y = X Rᵀ: (1) with R fixed, a few Lloyd iterations of
PQ on Y; (2) with the codes fixed, the orthogonal R minimising ||X Rᵀ − Ŷ||² (orthogonal
Procrustes, one SVD). faiss ``OPQMatrix`` is the reference and its schedule is ours: a random
orthogonal start, ``n_iter_pq_first`` = 40 Lloyd iterations in the first round, then
``n_iter_pq`` = 4 warm-started ones per round, ``n_iter`` = 50 rounds, training on at most
256·256 vectors (``max_train_points``).

Choice where faiss and the paper leave room: the reported loss of a round is the distortion
after its rotation update, so the curve is the objective OPQ actually decreases.
"""
from __future__ import annotations

import numpy as np
import torch

from ..kmeans import assign_nearest, split_into_subspaces
from ..validation import METRICS, check_int
from . import register
from .pq import PQ, subsample


def random_rotation(d: int, gen: torch.Generator) -> torch.Tensor:
    """A random orthogonal (d, d) matrix: QR of a Gaussian matrix with the signs fixed."""
    q, r = torch.linalg.qr(torch.randn((d, d), generator=gen, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))[None, :]).float()


def procrustes(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Orthogonal R (d, d) minimising ||X Rᵀ − Y||_F for X, Y (n, d): R = U Vᵀ with Yᵀ X = U S Vᵀ."""
    u, _, vh = torch.linalg.svd((Y.T.double() @ X.double()))
    return (u @ vh).float()


@register
class OPQ(PQ):
    """PQ preceded by a learned rotation; parameters as :class:`PQ`, plus the OPQ schedule.

    ``metric`` as :class:`PQ`: the rotation is the L2 (Procrustes) one whatever the metric, as
    faiss's ``OPQMatrix`` trains it; an orthogonal R keeps inner products, so <Rq, Rx̂> = <q, R^T Rx̂>.

    Fitted attributes: ``rotation_`` (d, d) float32, orthogonal, applied as ``X @ rotation_.T``
    (faiss ``LinearTransform.A``); ``codebooks_`` (M, K, d/M) in the rotated space.
    """

    name = "opq"
    title = "Optimized product quantization"
    paper = "Ge, He, Ke & Sun, TPAMI 2014"
    cli_options = PQ.cli_options[:1]  # --metric; PQ's --init and --no-repair are not parameters here
    param_choices = {"metric": METRICS}  # PQ's ``init`` is not a parameter here
    supports_checkpoint = True  # state: rotation_, codebooks_, round, RNG states
    checkpoint_attrs = ("codebooks_", "rotation_")

    def __init__(self, n_subspaces: int = 8, n_codewords: int = 256, *, n_iter: int = 50, n_iter_pq: int = 4,
                 n_iter_pq_first: int = 40, max_train_points: int | None = 65536, metric: str = "l2",
                 random_state: int = 0, device: str = "cpu"):
        super().__init__(n_subspaces, n_codewords, n_iter=n_iter, metric=metric, random_state=random_state, device=device)
        self.n_iter_pq = n_iter_pq
        self.n_iter_pq_first = n_iter_pq_first
        self.max_train_points = max_train_points

    def _validate(self, X, y):
        super()._validate(X, y)
        check_int(self.n_iter_pq, "n_iter_pq", low=1)
        check_int(self.n_iter_pq_first, "n_iter_pq_first", low=1)

    def _fit(self, X, y, run):
        X = self._metric_space(X)  # cosine: the rotation and codebooks are learned on unit rows
        gen, rng = self._generators()
        Xt = torch.from_numpy(subsample(X, self.max_train_points, rng)).to(self.device_)
        d = Xt.shape[1]
        R = random_rotation(d, gen).to(self.device_)
        C = None
        start = self._resume_from()
        if start:  # continue after round `start` with its rotation, codebooks and RNG states
            R = torch.from_numpy(np.array(self.rotation_, dtype=np.float32)).to(self.device_)
            C = torch.from_numpy(np.array(self.codebooks_, dtype=np.float32)).to(self.device_)
            self._restore_rngs(gen, rng)
        self.rotation_ = R.cpu().numpy()
        for it in range(start + 1, self.n_iter + 1):
            Y = Xt @ R.T
            C = self._train_codebooks(Y.cpu().numpy(), run, centroids=C, emit=False, rng=rng, gen=gen,
                                      n_iter=self.n_iter_pq_first if it == 1 else self.n_iter_pq)
            assign, _ = assign_nearest(split_into_subspaces(Y, self.n_subspaces), C)  # (M, n)
            Y_hat = torch.gather(C, 1, assign[..., None].expand(-1, -1, C.shape[2])).permute(1, 0, 2).reshape(len(Y), d)
            pq_mse = float(((Y - Y_hat) ** 2).sum(1).mean())
            R = procrustes(Xt, Y_hat)
            self.rotation_ = R.cpu().numpy()
            mse = float(((Xt @ R.T - Y_hat) ** 2).sum(1).mean())
            Xr = Xt @ R.T
            if not run.step(it, {"total": mse, "pq_step": pq_mse}, n_codewords=self.n_codewords, codes=assign.T.cpu().numpy(),
                            sample=lambda: self._embedding_sample(Xr.cpu().numpy())):
                break
        self.rotation_ = R.cpu().numpy().copy()

    def transform(self, X) -> np.ndarray:
        """Rotated vectors X Rᵀ (n, d) float32, where the codebooks live (of unit rows for cosine)."""
        X = self._metric_space(self._check_input(X))
        return np.ascontiguousarray(X @ self.rotation_.T, dtype=np.float32)

    def decode(self, codes) -> np.ndarray:
        """Codes (n, M) → vectors (n, d) in the input space: the rotated reconstruction times R."""
        return np.ascontiguousarray(self.reconstruct(codes) @ self.rotation_, dtype=np.float32)
