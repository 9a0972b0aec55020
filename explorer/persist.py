"""Saved models: :meth:`Quantizer.save` writes a fitted quantizer to one file, :func:`load_model`
(``explorer.load``) reads it back, for every method.

The file is a ``torch.save`` of plain data only — dicts, lists, numbers, strings and tensors
(numpy arrays wrapped by :func:`~explorer.checkpoint.to_storable`) — read back with
``torch.load(weights_only=True)``: loading a model never unpickles, so never runs code from the
file. It holds a header and the quantizer's :meth:`~explorer.methods.base.Quantizer.state_dict`
(the same state a training checkpoint saves: fitted arrays, network weights, optimizer and RNG
states), so a loaded model encodes and searches as the saved one did, and its ``state_dict()``
can still resume the training.

Header keys: ``format`` ("pq-explorer-model"), ``format_version`` (:data:`FORMAT_VERSION`),
``library_version`` (``explorer.__version__`` that wrote it), ``method``, ``params`` (the
hyper-parameters, ``device`` excepted), ``dim`` (input dimension), ``data`` (the training set's
:func:`~explorer.methods.base.data_digest`: n, dim, sha1 of ≤ 1000 rows) and ``metric``.

Compatibility: a file of another ``format_version`` is refused with a message naming the file and
both versions (the layout of the state is that version's); the library version is recorded, and
a model from another library version of the same format is loaded.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .atomic import atomic_path
from .checkpoint import from_storable, read_plain, to_storable
from .errors import DataFileError, InvalidParameter

FORMAT = "pq-explorer-model"
FORMAT_VERSION = 1
SUFFIX = ".pqx"


def model_header(quantizer) -> dict:
    """The header :func:`save_model` writes for a fitted ``quantizer`` (see the module docstring)."""
    from . import __version__
    quantizer._check_fitted()
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__,
            "method": quantizer.name,
            "params": {k: v for k, v in quantizer.get_params().items() if k != "device"},
            "dim": int(quantizer.dim_), "data": dict(quantizer._data_digest),
            "metric": getattr(quantizer, "metric", "l2")}


def save_model(quantizer, path: str | os.PathLike) -> Path:
    """Write fitted ``quantizer`` to ``path`` atomically (a failed write leaves no file); return the path."""
    path = Path(path)
    payload = {"header": model_header(quantizer), "state": to_storable(quantizer.state_dict())}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_header(path: str | os.PathLike) -> tuple[dict, dict]:
    """(header, raw payload) of the model file at ``path``, its format and version checked."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such model file; give a file written by quantizer.save() or pqx train --save")
    payload = read_plain(path, "model", "give a file written by quantizer.save() or pqx train --save")
    header = payload.get("header") if isinstance(payload, dict) else None
    if not isinstance(header, dict) or header.get("format") != FORMAT or "state" not in payload:
        raise DataFileError(f"{path}: not a PQ Explorer model (no {FORMAT!r} header); give a file written by "
                            "quantizer.save() or pqx train --save (a --checkpoint directory is not a model)")
    if header.get("format_version") != FORMAT_VERSION:
        raise DataFileError(f"{path}: model format version {header.get('format_version')!r} (written by pq-explorer "
                            f"{header.get('library_version')}), this pq-explorer reads version {FORMAT_VERSION}; "
                            "load it with the version that wrote it, or train and save again")
    return header, payload


def load_model(path: str | os.PathLike, method: str | None = None, *, device: str = "cpu"):
    """The fitted :class:`~explorer.methods.base.Quantizer` saved at ``path`` by :func:`save_model`.

    ``method``: when given, the method the file must hold (:class:`InvalidParameter` naming the
    file and both methods otherwise). ``device``: where torch methods run (default "cpu").
    Raises :class:`DataFileError` naming the file when it is missing, unreadable, not a model,
    of another format version, or of a method this installation lacks.
    """
    from . import methods
    header, payload = read_header(path)
    name = header.get("method")
    if method is not None and name != method:
        raise InvalidParameter(f"{path}: holds a {name!r} model, not {method!r}; load it as {name!r} "
                               f"or give a {method!r} model file")
    if name not in methods.available():
        raise DataFileError(f"{path}: holds a model of method {name!r}, which this installation does not have "
                            f"(it has {', '.join(methods.available())})")
    state = from_storable(payload["state"])
    quantizer = methods.create(name, **header["params"], device=device)
    quantizer.load_state_dict(state)
    quantizer._data_digest = dict(state["data"])
    return quantizer
