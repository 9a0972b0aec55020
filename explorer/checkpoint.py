"""Training checkpoints: save a quantizer's :meth:`~explorer.methods.base.Quantizer.state_dict`
every N steps, atomically, and load it to resume.

A checkpoint directory holds one file, ``checkpoint.pt`` (the latest state), written to a
temporary file in the same directory and renamed over the old one
(:func:`~explorer.atomic.atomic_open`), so a crash or Ctrl-C while saving leaves the previous
checkpoint intact. The file is one header line, ``PQXCKPT1 sha256=<64 hex digits>\n``, then a
``torch.save`` of plain data (numpy arrays stored as tensors): the checksum covers every byte of
that payload and is verified before it is read, so a flipped byte, a truncated copy or a file
edited by hand is refused with the file's name instead of loading wrong numbers. The payload is
read back with ``weights_only=True``: loading a checkpoint never runs pickled code.

Usage::

    ckpt = Checkpointer(quantizer, "ckpt/", every=5)
    quantizer.fit(X, callbacks=[ckpt])            # saves after steps 5, 10, ... and at the end
    state = load_checkpoint("ckpt/")
    type(quantizer)(**params).fit(X, resume=state)  # continues from state["step"]
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_open
from .errors import DataFileError
from .events import FitFinished, Step
from .validation import check_int

FILENAME = "checkpoint.pt"
MAGIC = b"PQXCKPT1 sha256="
HEADER_LEN = len(MAGIC) + 64 + 1  # magic, hex digest, newline


def to_storable(value):
    """``value`` (a state dict) with every numpy array wrapped as ``{"__ndarray__": tensor}``, so that
    ``torch.save`` stores plain data that ``torch.load(weights_only=True)`` reads back (also used
    by :mod:`explorer.persist`)."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, dict):
        return {k: to_storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_storable(v) for v in value)
    return value


def from_storable(value):
    """Inverse of :func:`to_storable`: the wrapped tensors back as numpy arrays."""
    if isinstance(value, dict):
        if set(value) == {"__ndarray__"}:
            return value["__ndarray__"].numpy()
        return {k: from_storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(from_storable(v) for v in value)
    return value


def read_plain(path: Path, what: str, fix: str, *, payload: bytes | None = None):
    """The plain data ``torch.save`` wrote at ``path`` (or ``payload``, the bytes read from it),
    read with ``weights_only=True`` (a file holding pickled code is refused, never run);
    :class:`DataFileError` naming the file, ``what`` it should be and the ``fix`` when it cannot be read."""
    try:
        return torch.load(path if payload is None else io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as exc:  # truncated, not a torch file, or a file holding code
        raise DataFileError(f"{path}: not a readable PQ Explorer {what} ({type(exc).__name__}); {fix}") from None


def save_checkpoint(directory: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` (a ``state_dict()``) to ``directory/checkpoint.pt`` atomically; return the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILENAME
    buf = io.BytesIO()
    torch.save(to_storable(state), buf)
    payload = buf.getvalue()
    with atomic_open(path, "wb") as fh:
        fh.write(MAGIC + hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n")
        fh.write(payload)
    return path


def _verified_payload(path: Path) -> bytes:
    """The payload bytes of checkpoint ``path`` after its header's sha256 is checked; :class:`DataFileError` if not."""
    raw = path.read_bytes()
    header, payload = raw[:HEADER_LEN], raw[HEADER_LEN:]
    if not header.startswith(MAGIC) or header[-1:] != b"\n":
        raise DataFileError(f"{path}: not a PQ Explorer checkpoint (no PQXCKPT1 checksum header: another file, or "
                            "one written before checkpoints carried a checksum); delete it and train again")
    if hashlib.sha256(payload).hexdigest().encode("ascii") != header[len(MAGIC):-1]:
        raise DataFileError(f"{path}: checkpoint is corrupt (its sha256 does not match its contents: a changed or "
                            "truncated file); delete it and train again, or restore an intact copy")
    return payload


def load_checkpoint(directory: str | os.PathLike) -> dict:
    """The state saved in ``directory`` by :func:`save_checkpoint`; :class:`DataFileError` naming the
    file when it is absent, unreadable, or fails its sha256 check."""
    path = Path(directory) / FILENAME
    if not path.is_file():
        raise DataFileError(f"--resume {directory}: no {FILENAME} there; give the directory passed to --checkpoint")
    state = read_plain(path, "checkpoint", "delete it and train again", payload=_verified_payload(path))
    if not isinstance(state, dict) or not {"method", "params", "step", "arrays", "rng"} <= set(state):
        raise DataFileError(f"{path}: not a PQ Explorer checkpoint (missing keys); delete it and train again")
    return from_storable(state)


class Checkpointer:
    """Callback that saves ``quantizer.state_dict()`` to ``directory`` every ``every`` steps and when the fit ends.

    It runs inside the step, so the saved state is exactly the one after that step; the final
    save (also after a stop or Ctrl-C) makes ``--resume`` continue from the last step trained.
    Only *resumable* steps are saved (``quantizer.at_resumable_step``): a step a mini-batch
    method reports in the middle of an epoch is not, so its checkpoints stay at epoch ends and
    a stop mid-epoch resumes from the last epoch completed. ``every`` counts
    ``quantizer.resumable_steps`` (iterations for PQ, epochs for the deep methods).
    """

    def __init__(self, quantizer, directory: str | os.PathLike, every: int = 1) -> None:
        self.quantizer = quantizer
        self.directory = Path(directory)
        self.every = check_int(every, "checkpoint_every", low=1)
        self.saved_steps: list[int] = []
        if not type(quantizer).supports_checkpoint:
            quantizer.state_dict()  # raises InvalidParameter naming the method, before any training

    def _save(self) -> None:
        state = self.quantizer.state_dict()
        if self.saved_steps and self.saved_steps[-1] == state["step"]:
            return
        save_checkpoint(self.directory, state)
        self.saved_steps.append(int(state["step"]))

    def __call__(self, event) -> None:
        if not isinstance(event, (Step, FitFinished)) or not self.quantizer.at_resumable_step:
            return
        if isinstance(event, FitFinished) or self.quantizer.resumable_steps % self.every == 0:
            self._save()
