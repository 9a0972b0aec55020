"""Datasets: built-ins that never download, readers for this field's file formats, splits.

One module per concern — :mod:`.dataset` (the :class:`Dataset` record, lazy row views),
:mod:`.builtin`, :mod:`.readers`, :mod:`.splits` — and here the entry points :func:`load` and
:func:`as_dataset`; every public name is importable from ``explorer.data``.

Built-ins
  ``digits``        scikit-learn's bundled 8×8 digits: 1,797 × 64 float32, labels 0–9 (default).
  ``synthetic``     a seeded Gaussian mixture with labels; n, d and clusters configurable.
  ``fashion-mnist`` 70,000 × 784 images from Debian's ``dataset-fashion-mnist`` package
                    (IDX files in /usr/share/datasets/fashion-mnist), read only if installed.

Readers (by file extension): ``.fvecs`` / ``.ivecs`` / ``.bvecs`` (TEXMEX format: each vector is
an int32 dimension followed by d values; memory-mapped, so a 1M×128 file is not read whole),
IDX (MNIST format, optionally ``.gz``) and ``.npy`` (memory-mapped). A malformed file raises
:class:`~explorer.errors.DataFileError` naming the file and what is wrong.

Whole datasets in one file (:func:`load` reads them into a :class:`Dataset`):

* ``.npz`` (named arrays, read into memory): the base is the array named by ``base_key``, else
  the first of :data:`NPZ_NAMES` ``["base"]`` present ("base", "train", "x"), else the file's
  only array; queries, labels, query labels and given ground-truth ids are read from the names
  listed in :data:`NPZ_NAMES` when present (e.g. ``np.savez(f, base=X, queries=Q, labels=y,
  query_labels=yq)``).
* ``.hdf5`` / ``.h5`` in the ann-benchmarks layout (needs ``h5py``: ``pip install
  "pq-explorer[hdf5]"``; read into memory): ``train`` is the base, ``test`` the queries,
  ``neighbors`` (nq, k) their exact neighbour ids, used as given for recall (not recomputed),
  ``distances`` their distances, and the file's ``distance`` attribute ("euclidean", "angular",
  "dot") the metric of that ground truth, in :attr:`Dataset.metric` ("l2", "cosine", "ip").
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import DataFileError, InvalidParameter, InvalidType, PQXError
from ..validation import check_labels, check_vectors
from .builtin import BUILTINS, FASHION_MNIST_DIR, load_digits, load_fashion_mnist, make_sift_like, make_synthetic
from .dataset import Dataset, RowsExcept, is_memory_mapped, row_batches
from .readers import (HDF5_METRICS, NPZ_NAMES, read_bvecs, read_fvecs, read_hdf5_dataset, read_idx, read_ivecs,
                      read_npy, read_npz_dataset, read_vectors, write_idx, write_vecs)
from .splits import ground_truth, sample_rows, split_queries, training_rows, training_sample, training_set


def load(name_or_path: str | os.PathLike = "digits", *, labels: str | os.PathLike | None = None,
         queries: str | os.PathLike | None = None, query_labels: str | os.PathLike | None = None,
         base_key: str | None = None, learn: str | os.PathLike | None = None, **options) -> Dataset:
    """Load a built-in dataset by name or vectors from a file.

    name_or_path: "digits" (default), "synthetic" (``options``: n, d, n_clusters, spread,
        random_state), "fashion-mnist", or a path readable by :func:`read_vectors`; an ``.npz``
        or ann-benchmarks ``.hdf5`` file gives its queries, labels and ground truth too (module
        docstring), ``base_key`` choosing the ``.npz`` array that is the base.
    labels: optional path to per-vector labels (.npy, .ivecs or IDX).
    queries: optional path to query vectors in any supported format (they replace the file's own).
    query_labels: optional path to the queries' labels (needs queries): with ``labels`` it
        makes mAP measurable on a separate query file.
    learn: optional path to a separate training set in any supported format (SIFT1M's layout:
        fit on ``learn``, encode and evaluate ``base``, search with ``queries``).
    File-backed bases stay memory-mapped; they are converted to float32 in batches by consumers.
    """
    key = str(name_or_path)
    suffix = Path(key).suffix.lower()
    if base_key is not None and suffix != ".npz":
        raise InvalidParameter(f"base_key (--base-key) names an array of an .npz file; {key} is not one")
    if key == "digits":
        ds = load_digits()
    elif key == "synthetic":
        ds = make_synthetic(**options)
    elif key in ("fashion-mnist", "fashion_mnist"):
        ds = load_fashion_mnist()
    elif suffix in (".npz", ".hdf5", ".h5") and Path(key).is_file():
        ds = read_npz_dataset(key, base_key) if suffix == ".npz" else read_hdf5_dataset(key)
    elif os.path.sep in key or Path(key).suffix or Path(key).exists():
        base = read_vectors(key)
        if base.ndim != 2:
            raise DataFileError(f"{key}: holds a {base.ndim}-D array; vectors must be 2-D (n, d)")
        if base.shape[0] == 0 or base.shape[1] == 0:
            raise DataFileError(f"{key}: holds no vectors (shape {base.shape}); give a file with at least one vector")
        ds = Dataset(Path(key).stem, base)
    else:
        raise InvalidParameter(f"unknown dataset {key!r}; use one of {', '.join(BUILTINS)} or a path to a vector file")
    if options and key != "synthetic":
        raise InvalidParameter(f"options {sorted(options)} only apply to the synthetic dataset")
    if labels is not None:
        lab = np.asarray(read_vectors(labels)).reshape(-1)
        ds = replace(ds, labels=check_labels(lab, ds.n, "labels"))
    if queries is not None:
        q = read_vectors(queries)
        if q.ndim != 2 or q.shape[1] != ds.dim:
            raise DataFileError(f"{queries}: queries have shape {q.shape} but the base vectors have d={ds.dim}")
        # the file's own ground truth and query labels belong to its own queries
        ds = replace(ds, queries=q, neighbors=None, query_labels=None)
    if query_labels is not None:
        if ds.queries is None:
            raise InvalidParameter(f"query labels {query_labels} (--query-labels) need queries; give --queries PATH too")
        qlab = np.asarray(read_vectors(query_labels)).reshape(-1)
        try:
            ds = replace(ds, query_labels=check_labels(qlab, len(ds.queries), "query labels"))
        except PQXError as exc:
            raise DataFileError(f"{query_labels}: {exc}") from None
    if learn is not None:
        train = read_vectors(learn)
        if train.ndim != 2 or train.shape[1] != ds.dim or train.shape[0] == 0:
            raise DataFileError(f"{learn}: learn vectors have shape {train.shape} but the base vectors have "
                                f"d={ds.dim}; give a learn file of at least one {ds.dim}-dim vector")
        ds = replace(ds, learn=train)
    return ds


def as_dataset(obj, *, name: str = "array", labels=None) -> Dataset:
    """A :class:`Dataset` from what a user holds: a Dataset (returned as is), a path or built-in
    name (:func:`load`), or an array-like of vectors (n, d) — numpy, torch tensor, nested lists —
    validated by :func:`~explorer.validation.check_vectors`, with optional ``labels`` (n,) (an
    array, or for a path also a labels file).

    Anything else raises :class:`~explorer.errors.InvalidType` saying what is accepted. Used by
    front ends (the dashboard) that take "data" in any of these forms.
    """
    if isinstance(obj, Dataset):
        if labels is not None:
            raise InvalidParameter("labels are given with a Dataset that carries its own; drop labels= or "
                                   "replace them with dataclasses.replace(ds, labels=...)")
        return obj
    if isinstance(obj, (str, os.PathLike)):
        if labels is None or isinstance(labels, (str, os.PathLike)):
            return load(obj, labels=labels)
        ds = load(obj)
        return replace(ds, labels=check_labels(labels, ds.n, "labels"))
    if isinstance(obj, (np.ndarray, list, tuple)) or hasattr(obj, "__array__") or hasattr(obj, "detach"):
        X = check_vectors(obj, "data")
        return Dataset(name, X, check_labels(labels, len(X), "labels"))
    raise InvalidType(f"data has type {type(obj).__name__}; pass an array of vectors (n, d), a Dataset, "
                      f"a built-in name ({', '.join(BUILTINS)}) or a path to a vector file")


__all__ = ["Dataset", "RowsExcept", "is_memory_mapped", "row_batches", "BUILTINS", "FASHION_MNIST_DIR",
           "load_digits", "make_synthetic", "make_sift_like", "load_fashion_mnist", "HDF5_METRICS", "NPZ_NAMES", "read_fvecs",
           "read_ivecs", "read_bvecs", "read_idx", "read_npy", "read_npz_dataset", "read_hdf5_dataset",
           "read_vectors", "write_vecs", "write_idx", "split_queries", "sample_rows", "training_sample",
           "training_rows", "training_set", "ground_truth", "load", "as_dataset"]
