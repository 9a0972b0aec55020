"""Checkpoint support shared by every method trained with torch optimizers (the deep methods of
``_deep.py``, RLQ): saving and restoring the optimizers' and LR schedulers' states, and keeping
them — with the RNG states — once a fit has ended, so a model stopped from the dashboard still
resumes exactly.

A method mixes :class:`TorchTrainingState` in before :class:`~explorer.methods.base.Quantizer`,
names the objects whose ``state_dict()`` a checkpoint holds in ``training_state_keys``, and in
``_fit``, once they exist and everything that draws from the seeded generators for set-up has
run, calls ``start = self._start_training(name=object, ...)``: 0 for a fresh fit; when resuming,
the checkpoint's step, with the fitted arrays, the method's ``_load_extra_state`` (which calls
:meth:`_load_training_states`), and every RNG restored. ``_extra_state`` adds
:meth:`_training_states` to what it returns.
"""
from __future__ import annotations

import copy
from typing import ClassVar

import torch

from .base import resolve_device


def state_copy(obj):
    """A copy of a (nested) ``state_dict()`` with every tensor detached and cloned to the CPU.

    Module and optimizer state dicts hold the live tensors that training updates in place; a
    checkpoint taken mid-fit must not follow them. Plain values are deep-copied.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: state_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(state_copy(v) for v in obj)
    return copy.deepcopy(obj)


class TorchTrainingState:
    """Mixin (before :class:`Quantizer`) saving and restoring optimizers, schedulers and RNGs.

    ``training_state_keys``: the checkpoint ``extra`` keys, one per object registered with
    :meth:`_start_training` (an unregistered or None object is saved as None).
    ``network_attrs``: the fitted torch modules; :meth:`load_state_dict` sets them to None
    before ``_load_extra_state``, which builds them afresh (on ``device_``) and loads weights.
    """

    training_state_keys: ClassVar[tuple[str, ...]] = ()
    network_attrs: ClassVar[tuple[str, ...]] = ()  # rebuilt by _load_extra_state in load_state_dict

    def _start_training(self, **objects) -> int:
        """Steps already trained: 0 for a fresh fit; when resuming, the checkpoint's step.

        Registers ``objects`` (optimizers, LR schedulers; keys from ``training_state_keys``) as
        those :meth:`state_dict` saves from now on. When resuming, restores the checkpoint's
        arrays and extra state (which loads these objects, see :meth:`_load_training_states`),
        then its RNG states; the checkpoint is consumed, so a later call in the same fit starts
        fresh. Call it right before the training loop, after everything that draws from the
        seeded generators.
        """
        self._training = dict(objects)
        if getattr(self, "_resume_state", None) is None:
            return 0
        start = self._resume_from()  # arrays, then _load_extra_state
        self._restore_rngs()
        self._resume_state = None
        return start

    def _training_states(self) -> dict:
        """CPU copies of the registered objects' ``state_dict()`` keyed by ``training_state_keys``:
        live during a fit, the copies taken when it ended afterwards."""
        if getattr(self, "_run", None) is None and getattr(self, "_after_fit", None) is not None:
            return state_copy(self._after_fit["training"])
        live = getattr(self, "_training", None) or {}
        return {k: None if live.get(k) is None else state_copy(live[k].state_dict()) for k in self.training_state_keys}

    def _load_training_states(self, extra: dict) -> None:
        """Load the checkpoint's states into the registered objects (none are registered outside a fit)."""
        for key, live in (getattr(self, "_training", None) or {}).items():
            if live is not None and extra.get(key) is not None:
                live.load_state_dict(state_copy(extra[key]))

    def _rng_states(self) -> dict:
        """As :meth:`Quantizer._rng_states` during a fit; after it, the states the fit ended with."""
        if getattr(self, "_run", None) is None and getattr(self, "_after_fit", None) is not None:
            return state_copy(self._after_fit["rng"])
        return super()._rng_states()

    def fit(self, X, y=None, **kwargs):
        """As :meth:`Quantizer.fit`. When it returns, the model keeps copies of the optimizer,
        scheduler and RNG states instead of the objects (a scheduler's lambda does not pickle,
        and the global RNG is the caller's again), so ``state_dict()`` taken after a stopped
        fit — the dashboard's Stop — still resumes it exactly."""
        previous, self._after_fit = getattr(self, "_after_fit", None), None
        self._training = None
        try:
            return super().fit(X, y, **kwargs)
        finally:
            if self.supports_checkpoint and self._training is not None:  # this fit reached its training loop
                self._after_fit = {"training": self._training_states(), "rng": self._rng_states()}
            else:  # refused before training (bad input): the previous model and its states stand
                self._after_fit = previous
            self._training = None

    def load_state_dict(self, state: dict):
        """Restore a usable model from a :meth:`state_dict` (the method's ``_load_extra_state``
        rebuilds what it needs); return self.

        The parameters must be those the checkpoint was trained with. The optimizer, scheduler
        and RNG states are kept too, so ``state_dict()`` of the loaded model can still resume the
        training.
        """
        super().load_state_dict(state)
        self._data_digest = dict(state["data"])
        self._check_resumable(state)  # same method and parameters (the data is the checkpoint's own)
        self.device_ = resolve_device(self.device)
        self._training = None
        for attr in self.network_attrs:
            setattr(self, attr, None)
        self._load_extra_state(state["extra"])
        self._after_fit = state_copy({"training": {k: state["extra"].get(k) for k in self.training_state_keys},
                                      "rng": state["rng"]})
        return self
