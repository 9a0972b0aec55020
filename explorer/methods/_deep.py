"""Shared machinery of the deep quantizers (DPQ, FPPQ, SSCQ): a torch model that maps input
vectors to an embedding of ``embedding_dim`` = D dimensions split into M sub-vectors, trained
by mini-batch epochs; ``transform`` runs the model in eval mode, in batches.

A method subclasses :class:`DeepQuantizer`, builds its network in ``_build_model`` (store it as
``self.model_``; its ``embed(x)`` method must return the (b, D) embedding in which ``codebooks_``
live) and writes its own epoch loop in ``_fit`` using :meth:`_prepare` and :meth:`_batches`;
its ``cli_options`` start with :data:`DEEP_OPTIONS`, the flags every deep method shares. Inputs are standardised with one scalar mean and scale
measured on the training set (``input_mean_``, ``input_scale_``), so digits (0–16) and
Fashion-MNIST (0–1) reach the network on the same footing.
"""
from __future__ import annotations

import numpy as np
import torch

from ..backbones import BACKBONES, infer_image_shape
from ..errors import InvalidParameter
from ..validation import check_float, check_int
from .base import Option, Quantizer

DEEP_OPTIONS = (
    Option("--embedding-dim", "embedding_dim", "D, the embedding size (deep methods)", type=int),
    Option("--batch-size", "batch_size", "mini-batch size (deep methods)", type=int),
    Option("--lr", "lr", "learning rate (deep methods)", type=float),
    Option("--backbone", "backbone", "auto, cnn, mlp or linear (deep methods)", type=str),
)


class DeepQuantizer(Quantizer):
    """Base of the deep methods. Parameters shared by all of them:

    embedding_dim : D, the embedding size; must be divisible by n_subspaces.
    epochs, batch_size, lr : the optimisation schedule.
    backbone : "auto" (CNN for square images, MLP otherwise), "cnn", "mlp" or "linear".
    image_shape : (h, w) of image inputs; None infers it from d (64 → 8×8, 784 → 28×28).
    """

    def _embedding_size(self) -> int:
        """D, the embedding size in use: ``embedding_dim`` here; a method may derive it when the
        parameter is left None (SSCQ: 16 · M, the paper's D/M = 16)."""
        return self.embedding_dim

    def _validate(self, X, y):
        D = check_int(self._embedding_size(), "embedding_dim (D)", low=1)
        M = check_int(self.n_subspaces, "n_subspaces (M)", low=1)
        check_int(self.n_codewords, "n_codewords (K)", low=2, high=65536, fix="codes are stored as uint16, so K ≤ 65536")
        if D % M:
            raise InvalidParameter(f"n_subspaces (M)={M} does not divide embedding_dim (D)={D}; "
                                   f"choose D as a multiple of M (e.g. D={M * max(1, D // M)})")
        check_int(self.epochs, "epochs", low=1)
        check_int(self.batch_size, "batch_size", low=2)
        check_float(self.lr, "lr", low=0.0)
        if self.backbone not in BACKBONES:
            raise InvalidParameter(f"backbone={self.backbone!r} is not known; use one of {', '.join(BACKBONES)}")

    # ------------------------------------------------------------------ training helpers
    def _prepare(self, X: np.ndarray) -> torch.Tensor:
        """Set input statistics and ``image_shape_``; return the standardised training tensor (n, d)."""
        self.input_mean_ = float(X.mean())
        self.input_scale_ = float(X.std()) or 1.0
        self.image_shape_ = tuple(self.image_shape) if self.image_shape is not None else infer_image_shape(X.shape[1])
        return self._standardise(X)

    def _standardise(self, X: np.ndarray) -> torch.Tensor:
        return ((torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)) - self.input_mean_) / self.input_scale_).to(self.device_)

    def _batches(self, n: int, gen: torch.Generator, *, drop_last: bool = True):
        """Shuffled index batches (LongTensor) for one epoch, from the seeded generator."""
        order = torch.randperm(n, generator=gen)
        bs = min(self.batch_size, n)
        stop = n - (n % bs) if drop_last and n >= bs else n
        for start in range(0, stop, bs):
            yield order[start:start + bs].to(self.device_)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def transform(self, X) -> np.ndarray:
        """Embeddings (n, D) float32 from the trained model in eval mode, computed in batches."""
        X = self._check_input(X)
        self.model_.eval()
        out = np.empty((len(X), self._embedding_size()), dtype=np.float32)
        for start in range(0, len(X), 4096):
            out[start:start + 4096] = self.model_.embed(self._standardise(X[start:start + 4096])).float().cpu().numpy()
        return out
