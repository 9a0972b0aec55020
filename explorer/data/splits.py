"""Splits of a :class:`Dataset`: held-out queries, seeded training samples (reading only their rows
of a memory map), and exact ground truth for the queries."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import InvalidParameter
from ..validation import check_int, check_random_state, check_vectors
from .dataset import Dataset, RowsExcept, is_memory_mapped


def split_queries(ds: Dataset, n_queries: int = 200, *, random_state: int = 0) -> Dataset:
    """Hold out ``n_queries`` base vectors (seeded) as queries; they leave the base.

    A dataset that already has queries is returned unchanged. An in-memory base is copied
    without the held rows. A memory-mapped base (a vector file) is not copied: the new base is a
    :class:`RowsExcept` view that skips the held rows lazily, so the same rows in the same order
    are seen as with a copy, and only the queries (``n_queries`` rows) are read into memory.
    """
    if ds.queries is not None:
        return ds
    n_queries = check_int(n_queries, "n_queries", low=1, high=ds.n - 1, fix="keep at least one base vector")
    ids = np.sort(np.random.default_rng(check_random_state(random_state)).choice(ds.n, size=n_queries, replace=False))
    lab = ds.labels
    labels = dict(labels=None if lab is None else np.delete(lab, ids), query_labels=None if lab is None else lab[ids])
    if is_memory_mapped(ds.base):  # no (n,) mask either: memory here is O(n_queries)
        return replace(ds, base=RowsExcept(ds.base, ids), queries=np.asarray(ds.base[ids]), **labels)
    base = np.asarray(ds.base)
    return replace(ds, base=np.delete(base, ids, axis=0), queries=base[ids], **labels)


def sample_rows(n: int, size: int, random_state: int = 0) -> np.ndarray:
    """(size,) int64 sorted ids of a seeded sample without replacement of ``range(n)``.

    Sorted, so that gathering them from a memory map reads the file forwards, once.
    """
    return np.sort(np.random.default_rng(check_random_state(random_state)).choice(n, size=size, replace=False))


def training_sample(base: np.ndarray, train_size: int, random_state: int = 0) -> np.ndarray:
    """(min(train_size, n), d) float32: seeded rows of ``base`` in file order (only those rows are read)."""
    n = len(base)
    train_size = check_int(train_size, "train_size", low=1)
    if train_size >= n:
        return check_vectors(base, "base")
    return check_vectors(base[sample_rows(n, train_size, random_state)], "base (training sample)")


def training_rows(ds: Dataset, train_size: int | None, random_state: int = 0, *, name: str = "train_size"):
    """(train_size,) sorted int64 ids of the seeded training sample of the training source
    (``ds.learn`` when the dataset has one, else ``ds.base``; :func:`sample_rows`), or None for
    all of it; nothing is read. ``name`` is how an out-of-range size is named in the error (the
    CLI says ``--train-size``)."""
    if train_size is None:
        return None
    n, what = (ds.n, "base vectors (queries excluded)") if ds.learn is None else (len(ds.learn), "learn vectors")
    size = check_int(train_size, name, low=1, high=n,
                     fix=f"Give at most the {n} {what}, or leave {name} out to fit on all of them")
    return sample_rows(n, size, random_state)


def training_set(ds: Dataset, train_size: int | None, random_state: int = 0, *, name: str = "train_size"):
    """(X, labels) to fit on: the whole base and its labels, or with ``train_size`` the seeded
    sample of that many base rows (:func:`training_rows`), so that only they are read from a
    memory-mapped base. Labels are None when the dataset has none. With a learn set
    (``ds.learn``, ``--learn``) the rows come from it instead, and labels are None (learn files
    carry none; the base's labels score the evaluation only). Shared by ``pqx train`` and
    :func:`explorer.sweep.sweep`, so both fit on the same rows for a seed."""
    rows = training_rows(ds, train_size, random_state, name=name)
    if ds.learn is not None:
        return (ds.learn if rows is None else ds.learn[rows]), None
    if rows is None:
        return ds.base, ds.labels
    return ds.base[rows], None if ds.labels is None else ds.labels[rows]


def ground_truth(ds: Dataset, k: int = 100, *, metric: str = "l2") -> np.ndarray:
    """(nq, k) int64 ids of each query's exact nearest base vectors by ``metric`` ("l2": faiss
    ``IndexFlatL2``; "ip", "cosine": ``IndexFlatIP``, on unit rows for cosine), searched in chunks
    of the base (:func:`~explorer.search.exact_knn`), so a memory-mapped base is not loaded whole."""
    from ..search import exact_knn
    if ds.queries is None:
        raise InvalidParameter("the dataset has no queries; call split_queries(ds, n_queries) first")
    return exact_knn(ds.base, ds.queries, k, metric=metric)[1]
