"""Shared machinery of the deep quantizers (DPQ, FPPQ, SSCQ): a torch model that maps input
vectors to an embedding of ``embedding_dim`` = D dimensions split into M sub-vectors, trained
by mini-batch epochs; ``transform`` runs the model in eval mode, in batches.

A method subclasses :class:`DeepQuantizer`, builds its network (store it as ``self.model_``; its
``embed(x)`` method must return the (b, D) embedding in which ``codebooks_`` live; FPPQ and SSCQ
build it in ``_make_model``, see below) and writes its own epoch loop in ``_fit`` using
:meth:`_prepare` and :meth:`_batches`; its ``cli_options`` start with :data:`DEEP_OPTIONS`, the
flags every deep method shares. Inputs are standardised with one scalar mean and scale measured
on the training set (``input_mean_``, ``input_scale_``), so digits (0–16) and Fashion-MNIST
(0–1) reach the network on the same footing.

Checkpoints (``pqx train --checkpoint/--resume``, ``fit(X, resume=state)``) are handled here once
for every deep method, on top of :class:`~explorer.methods._torch_state.TorchTrainingState` (the
optimizer/scheduler/RNG save-and-restore it shares with RLQ). A method opts in with three things:

1. ``supports_checkpoint = True`` and, in ``checkpoint_attrs``, the fitted arrays the network
   cannot be rebuilt without (DPQ: ``("classes_",)``; leave ``codebooks_`` out where it is a
   property computed from the model);
2. ``_make_model(dim, gen)``, returning its network for inputs of ``dim`` features, built from
   the parameters and fitted attributes alone (``_fit`` builds it the same way, so the seeded
   RNGs are consumed identically in a fresh and a resumed fit);
3. in ``_fit``, once the model, optimizer and LR scheduler exist, ``start =
   self._resume_training(optimizer, scheduler)`` and the epoch loop ``for epoch in range(start
   + 1, self.epochs + 1)``. Fresh fits get 0; a resumed fit gets the checkpoint's step with the
   model, optimizer, scheduler, ``history_`` and every RNG (the torch generator of batches and
   augmentations, numpy's, torch's global one for init and dropout) as they were after it.

The checkpoint's ``extra`` then holds ``model``, ``optimizer`` and ``scheduler``
(``state_dict()`` copies on the CPU, so later training cannot change a state already taken),
``input`` (the standardisation and image shape) and ``history``. A method with more training
state (FPPQ: its PQ labels and phase) extends :meth:`_extra_state` / :meth:`_load_extra_state`;
one with fitted attributes derived from the network (DPQ's ``centroids_``, ``classifier_``)
refreshes them in ``_load_extra_state`` after calling ``super()``.
"""
from __future__ import annotations

import copy
import inspect

import numpy as np
import torch
from torch import nn

from ..backbones import BACKBONES, infer_image_shape
from ..errors import InvalidParameter
from ..validation import check_float, check_int, errors_name_rows
from ._torch_state import TorchTrainingState, state_copy  # noqa: F401  (state_copy: re-exported)
from .base import Option, Quantizer, reads_in_batches

INFERENCE_BATCH = 4096
"""Rows per forward pass of ``transform`` (a few MB of activations for the default networks)."""

DEEP_OPTIONS = (
    Option("--embedding-dim", "embedding_dim", "D, the embedding size (deep methods)", type=int),
    Option("--batch-size", "batch_size", "mini-batch size (deep methods)", type=int),
    Option("--lr", "lr", "learning rate (deep methods)", type=float),
    Option("--backbone", "backbone", "auto, cnn, mlp or linear (deep methods)", type=str),
)


class DeepQuantizer(TorchTrainingState, Quantizer):
    """Base of the deep methods. Parameters shared by all of them:

    embedding_dim : D, the embedding size; must be divisible by n_subspaces.
    epochs, batch_size, lr : the optimisation schedule.
    backbone : "auto" (CNN for square images, MLP otherwise), "cnn", "mlp" or "linear".
    image_shape : (h, w) of image inputs; None infers it from d (64 → 8×8, 784 → 28×28).
    """

    param_choices = {"backbone": BACKBONES}
    training_state_keys = ("optimizer", "scheduler")
    network_attrs = ("model_",)

    @classmethod
    def _embedding_for(cls, n_subspaces: int) -> int:
        """D for M = ``n_subspaces`` in a code-length grid: the default ``embedding_dim`` rounded
        down to a multiple of M (at least M) — Klein & Wolf's rule, "when U is not divisible by M,
        we discard a few units so that M would divide U"."""
        default = inspect.signature(cls.__init__).parameters["embedding_dim"].default or n_subspaces
        return max(1, default // n_subspaces) * n_subspaces

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

    # ------------------------------------------------------------------ checkpoints
    def _make_model(self, dim: int, gen: torch.Generator) -> nn.Module:
        """The method's network for inputs of ``dim`` features, on ``device_`` (checkpointing methods define it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _make_model to support checkpoints")

    def _resume_training(self, optimizer: torch.optim.Optimizer | None, scheduler=None) -> int:
        """Epochs already trained: 0 for a fresh fit; when resuming, the checkpoint's step.

        Registers ``optimizer`` and ``scheduler`` (an LR scheduler or None) as the ones
        :meth:`state_dict` saves from now on. When resuming, loads the checkpoint's model,
        optimizer, scheduler and ``history_`` into them, then its RNG states; the checkpoint is
        consumed, so a later call in the same fit (FPPQ's second phase) starts fresh. Call it
        right before the epoch loop, after everything that draws from the seeded generators.
        """
        return self._start_training(optimizer=optimizer, scheduler=scheduler)

    def _extra_state(self) -> dict:
        """Model, optimizer and LR-scheduler ``state_dict()`` (CPU copies), input standardisation, ``history_``."""
        history = getattr(self, "history_", None)
        return {"model": state_copy(self.model_.state_dict()), **self._training_states(),
                "input": {"mean": float(self.input_mean_), "scale": float(self.input_scale_),
                          "image_shape": None if self.image_shape_ is None else tuple(self.image_shape_)},
                "history": None if history is None else copy.deepcopy(list(history))}

    def _load_extra_state(self, extra: dict) -> None:
        """Restore :meth:`_extra_state`: the network (built by :meth:`_make_model` when there is
        none yet), and the registered optimizer and scheduler when resuming."""
        self.input_mean_, self.input_scale_ = float(extra["input"]["mean"]), float(extra["input"]["scale"])
        shape = extra["input"]["image_shape"]
        self.image_shape_ = None if shape is None else tuple(int(v) for v in shape)
        if getattr(self, "model_", None) is None:
            with torch.random.fork_rng(devices=[]):  # the weights are overwritten: leave the caller's RNG alone
                self.model_ = self._make_model(int(self.dim_), torch.Generator()).to(self.device_)
        self.model_.load_state_dict(extra["model"])
        self._load_training_states(extra)
        if extra.get("history") is not None:
            self.history_ = copy.deepcopy(list(extra["history"]))

    def load_state_dict(self, state: dict) -> "DeepQuantizer":
        """Rebuild the trained network of a :meth:`state_dict` (a usable model, in eval mode); return self.

        The parameters must be those the checkpoint was trained with (they shape the network).
        The optimizer, scheduler and RNG states are kept too, so ``state_dict()`` of the loaded
        model can still resume the training.
        """
        super().load_state_dict(state)
        self.model_.eval()
        return self

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def transform(self, X) -> np.ndarray:
        """Embeddings (n, D) float32 from the trained model in eval mode, computed in batches of
        :data:`INFERENCE_BATCH` rows. A numpy array, memory map or
        :class:`~explorer.data.RowsExcept` larger than one batch is also read and validated a
        batch at a time (:func:`~explorer.methods.base.reads_in_batches`): only the (n, D)
        embeddings are held, not a float32 copy of X."""
        batch, by_batch = INFERENCE_BATCH, reads_in_batches(X, INFERENCE_BATCH)
        X = X if by_batch else self._check_input(X)
        self._check_fitted()
        self.model_.eval()
        out = np.empty((len(X), self._embedding_size()), dtype=np.float32)
        for start in range(0, len(X), batch):
            stop = min(start + batch, len(X))
            with errors_name_rows(start, stop, len(X)):
                rows = self._check_input(X[start:stop]) if by_batch else X[start:stop]
            out[start:stop] = self.model_.embed(self._standardise(rows)).float().cpu().numpy()
        return out
