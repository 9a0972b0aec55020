"""Shared machinery of the deep quantizers (DPQ, FPPQ, SSCQ): a torch model that maps input
vectors to an embedding of ``embedding_dim`` = D dimensions split into M sub-vectors, trained
by mini-batch epochs; ``transform`` runs the model in eval mode, in batches.

A method subclasses :class:`DeepQuantizer`, builds its network (store it as ``self.model_``; its
``embed(x)`` method must return the (b, D) embedding in which ``codebooks_`` live; FPPQ and SSCQ
build it in ``_make_model``, see below) and trains in ``_fit`` through :meth:`_prepare` and
the shared loop :meth:`_train_batches`; its ``cli_options`` start with :data:`DEEP_OPTIONS`, the
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
   self._resume_training(optimizer, scheduler)`` (epochs already trained: 0 for a fresh fit; a
   resumed fit gets the checkpoint's with the model, optimizer, scheduler, ``history_`` and every
   RNG — the torch generator of batches and augmentations, numpy's, torch's global one for init
   and dropout — as they were after it), then the one training loop every deep method shares:
   ``for epoch, idx in self._train_batches(run, n, gen, start, window, ...)``, training on the
   rows ``idx`` and adding the batch to ``window`` (a :class:`StepWindow`).

Steps within epochs. :meth:`DeepQuantizer._train_batches` reports a Step every ``log_every``
mini-batches (default :data:`LOG_EVERY`) and at every epoch's end, with the losses and usage of
the mini-batches since the previous Step and ``Step.epoch`` the fractional epoch; ``Step.step``
counts Steps (epoch e ends at step e · ⌈batches per epoch / log_every⌉, so ``planned_steps`` is
epochs times that). It hears a stop after every mini-batch, and leaves the model usable
(:meth:`DeepQuantizer._refresh_fitted`). Only epoch ends are resumable: a checkpoint saved
there holds ``epochs_done``; a stop mid-epoch resumes from the last epoch end, and the resumed
fit ends bit-identical to an uninterrupted one (``log_every`` changes no training; it is part of
the parameters a resume must repeat, since it numbers the steps).

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

LOG_EVERY = 4
"""Default ``log_every``: a Step every 4 mini-batches, so a digits epoch (1,597 images) gives 6
Steps at DPQ's batch of 64 and 3 at FPPQ's and SSCQ's 128."""

INFERENCE_BATCH = 4096
"""Rows per forward pass of ``transform`` (a few MB of activations for the default networks)."""

DEEP_OPTIONS = (
    Option("--embedding-dim", "embedding_dim", "D, the embedding size (deep methods)", type=int),
    Option("--batch-size", "batch_size", "mini-batch size (deep methods)", type=int),
    Option("--lr", "lr", "learning rate (deep methods)", type=float),
    Option("--backbone", "backbone", "auto, cnn, mlp or linear (deep methods)", type=str),
    Option("--log-every", "log_every", f"report a step every N mini-batches (deep methods; default {LOG_EVERY})",
           type=int),
)


class StepWindow:
    """Running sums of a method's mini-batches since the last Step (the *window*) and since the
    epoch began, which :meth:`DeepQuantizer._train_batches` turns into Steps and epoch means.

    :meth:`add` takes one mini-batch's loss terms (floats), its hard codes (b, M) int64 (a
    torch tensor or numpy array, counted into (M, K) usage) and its soft-vs-hard numbers (a dict,
    averaged over the window, or a zero-argument function evaluated only for the window's last
    batch when a Step is reported: what costs a pass over the codebooks is paid per Step, not
    per mini-batch).
    """

    def __init__(self, n_subspaces: int, n_codewords: int):
        self.M, self.K = int(n_subspaces), int(n_codewords)
        self._offsets = torch.arange(self.M, dtype=torch.int64) * self.K
        self.epoch: dict[str, float] = {}
        self.epoch_batches = 0
        self.reset()

    def reset(self) -> None:
        """Start a new window (after a Step)."""
        self.losses: dict[str, float] = {}
        self.batches = 0
        self.usage = torch.zeros(self.M * self.K, dtype=torch.int64)
        self._soft_hard: dict[str, float] = {}
        self._soft_hard_batches = 0
        self._soft_hard_last = None

    def reset_epoch(self) -> None:
        self.epoch, self.epoch_batches = {}, 0
        self.reset()

    def add(self, losses: dict, codes=None, soft_hard=None) -> None:
        for key, value in losses.items():
            self.losses[key] = self.losses.get(key, 0.0) + float(value)
            self.epoch[key] = self.epoch.get(key, 0.0) + float(value)
        self.batches += 1
        self.epoch_batches += 1
        if codes is not None:
            codes = torch.as_tensor(codes).detach().to("cpu", torch.int64)
            self.usage += torch.bincount((codes + self._offsets).reshape(-1), minlength=self.M * self.K)
        if callable(soft_hard):
            self._soft_hard_last = soft_hard
        elif soft_hard is not None:
            for key, value in soft_hard.items():
                self._soft_hard[key] = self._soft_hard.get(key, 0.0) + float(value)
            self._soft_hard_batches += 1

    def window_losses(self) -> dict[str, float]:
        """Mean of each loss term over the window's mini-batches."""
        return {k: v / max(1, self.batches) for k, v in self.losses.items()}

    def epoch_losses(self) -> dict[str, float]:
        """Mean of each loss term over the epoch's mini-batches so far."""
        return {k: v / max(1, self.epoch_batches) for k, v in self.epoch.items()}

    def window_usage(self) -> np.ndarray:
        """(M, K) int64 codes counted over the window."""
        return self.usage.reshape(self.M, self.K).numpy()

    def window_soft_hard(self) -> dict | None:
        if self._soft_hard_last is not None:
            return self._soft_hard_last()
        if self._soft_hard_batches:
            return {k: v / self._soft_hard_batches for k, v in self._soft_hard.items()}
        return None



class DeepQuantizer(TorchTrainingState, Quantizer):
    """Base of the deep methods. Parameters shared by all of them:

    embedding_dim : D, the embedding size; must be divisible by n_subspaces.
    epochs, batch_size, lr : the optimisation schedule.
    log_every : mini-batches between two Steps (default :data:`LOG_EVERY`); each epoch also ends
        with one. Steps within an epoch are not resumable; checkpoints stay at epoch ends.
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
        check_int(self.log_every, "log_every", low=1, fix="it counts mini-batches between two Steps")
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

    # ------------------------------------------------------------------ steps within epochs
    def _batches_per_epoch(self, n: int) -> int:
        """Mini-batches of one epoch of ``n`` rows, as :meth:`_batches` makes them (last partial batch dropped)."""
        bs = min(int(self.batch_size), n)
        return max(1, n // bs)

    def _steps_per_epoch(self, n: int) -> int:
        """Steps reported per epoch: one every ``log_every`` mini-batches, the last at the epoch's end."""
        return -(-self._batches_per_epoch(n) // int(self.log_every))

    @property
    def planned_steps(self) -> int | None:
        """Steps of a full fit: epochs × ⌈batches per epoch / log_every⌉. The batches per epoch
        depend on the data, so this is None until a fit has seen it (from ``FitStarted`` on)."""
        digest = getattr(self, "_data_digest", None)
        if digest is None:
            return None
        return int(self.epochs) * self._steps_per_epoch(int(digest["n"]))

    @property
    def resumable_steps(self) -> int:
        """Epochs completed: a deep method resumes from epoch ends only (``Checkpointer(every=N)`` counts these)."""
        return int(getattr(self, "_epochs_done", 0))

    def _refresh_fitted(self) -> None:
        """Set the fitted attributes a Step or a stop must leave usable (``codebooks_`` from the
        network); called before every Step. Default: ``codebooks_ = model_.codebooks()``."""
        self.codebooks_ = self.model_.codebooks().detach().cpu().numpy().astype(np.float32)

    def _train_batches(self, run, n: int, gen: torch.Generator, start: int, window: StepWindow, *,
                       sample=None, on_epoch_end=None):
        """Yield ``(epoch, idx)`` for every training mini-batch of epochs ``start + 1 … epochs``,
        and report Steps between them: the one training loop every deep method shares.

        The method trains on ``idx`` (a LongTensor of rows) and adds the batch to ``window``
        (:meth:`StepWindow.add`). After every ``log_every``-th mini-batch of an epoch and after
        its last one, a :class:`~explorer.events.Step` reports the window (losses and usage of
        the mini-batches since the previous Step); ``Step.step`` counts Steps (monotone across
        epochs and resumes: epoch e ends at step e · ⌈batches / log_every⌉) and ``Step.epoch`` is
        the fractional epoch. Only the epoch's last Step is *resumable* (a checkpoint is saved
        there, :class:`~explorer.checkpoint.Checkpointer`): ``on_epoch_end(epoch, means)`` (the
        epoch's mean losses) runs first, so that history and notes are in the state it saves.
        A stop request is heard after every mini-batch: a Step then reports the partial window
        and the generator ends, the model usable (:meth:`_refresh_fitted`).
        """
        per_epoch = self._batches_per_epoch(n)
        log_every = int(self.log_every)
        for epoch in range(start + 1, self.epochs + 1):
            self.model_.train()
            window.reset_epoch()
            for j, idx in enumerate(self._batches(n, gen), start=1):
                yield epoch, idx
                end = j == per_epoch
                stopping = run.stop_requested()
                if not (end or stopping or j % log_every == 0):
                    continue
                self._refresh_fitted()
                if end:
                    self._epochs_done = epoch
                    if on_epoch_end is not None:
                        on_epoch_end(epoch, window.epoch_losses())
                keep = run.step(run.steps + 1, window.window_losses(), n_codewords=self.n_codewords,
                                usage=window.window_usage(), soft_hard=window.window_soft_hard() if run.observed else None,
                                sample=sample, epoch=epoch - 1 + j / per_epoch, resumable=end)
                window.reset()
                if not keep:
                    return
                self.model_.train()  # a sample may have run the model in eval mode

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
        self._epochs_done = 0
        self._start_training(optimizer=optimizer, scheduler=scheduler)
        return self._epochs_done

    def _extra_state(self) -> dict:
        """Model, optimizer and LR-scheduler ``state_dict()`` (CPU copies), input standardisation, ``history_``."""
        history = getattr(self, "history_", None)
        return {"model": state_copy(self.model_.state_dict()), **self._training_states(),
                "epochs_done": int(getattr(self, "_epochs_done", 0)),
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
        if "epochs_done" not in extra:
            raise InvalidParameter("this checkpoint predates steps within epochs (no 'epochs_done'); "
                                   "train again without --resume")
        self._epochs_done = int(extra["epochs_done"])
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
