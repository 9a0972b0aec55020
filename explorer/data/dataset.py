"""The :class:`Dataset` record, and the lazy views of a memory-mapped base every consumer reads
in batches (:class:`RowsExcept`, :func:`row_batches`, :func:`is_memory_mapped`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..validation import check_int

BUILTINS = ("digits", "synthetic", "fashion-mnist")
"""Names of the built-in datasets (:mod:`explorer.data.builtin`), accepted wherever a path is."""


@dataclass(frozen=True)
class Dataset:
    """Vectors to quantize, with optional labels and queries.

    base: (n, d) float32 (may be a read-only memory map); labels: (n,) int64 or None;
    queries: (nq, d) float32 or None; query_labels: (nq,) or None; image_shape: (h, w) when
    the vectors are images (digits 8×8, Fashion-MNIST 28×28), so image models can reshape them.
    neighbors: (nq, k) int64 ids of each query's exact nearest base vectors when the file gave
    them (ann-benchmarks ``neighbors``): evaluation uses them as given instead of computing its
    own; metric: the metric ("l2", "ip", "cosine") that ground truth was made with, when known.
    learn: (n_learn, d) or None, a separate training set (SIFT1M's ``learn`` file): when given,
    fits use it (:func:`~explorer.data.training_set`) and the base is only encoded and evaluated.
    """

    name: str
    base: np.ndarray
    labels: np.ndarray | None = None
    queries: np.ndarray | None = None
    query_labels: np.ndarray | None = None
    image_shape: tuple[int, int] | None = None
    neighbors: np.ndarray | None = None
    metric: str | None = None
    learn: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.base.shape[0])

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])

    def __repr__(self) -> str:
        q = "none" if self.queries is None else str(len(self.queries))
        learn = "" if self.learn is None else f", learn={tuple(self.learn.shape)}"
        return (f"Dataset({self.name!r}, base={self.base.shape}, labels={'yes' if self.labels is not None else 'no'}, "
                f"queries={q}{learn})")


def is_memory_mapped(array) -> bool:
    """True when ``array`` (or an array it is a view of) reads a file through a memory map."""
    import mmap
    while array is not None:
        if isinstance(array, (np.memmap, mmap.mmap, RowsExcept)):
            return True
        array = getattr(array, "base", None)
    return False


class RowsExcept:
    """The rows of a memory-mapped ``array`` (n, d) except the sorted ids ``excluded``, read on indexing.

    Behaves as a read-only (n − len(excluded), d) array for what the library does with a base:
    ``len``, ``shape``, ``dtype``, ``ndim``, slicing and integer-array indexing (which read only
    the rows asked for and return ndarrays), and ``np.asarray`` (which reads every kept row: a
    full copy, for consumers that need the whole base in memory). It holds only the excluded
    ids: kept position p is file row p + #{j : excluded[j] − j ≤ p}.
    """

    def __init__(self, array: np.ndarray, excluded: np.ndarray) -> None:
        self.array = array
        self.excluded = np.unique(np.asarray(excluded, dtype=np.int64))
        self._gaps = self.excluded - np.arange(len(self.excluded))  # kept rows before each excluded one
        self.shape = (len(array) - len(self.excluded),) + tuple(array.shape[1:])
        self.dtype, self.ndim = array.dtype, array.ndim

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"RowsExcept({self.shape}, {self.dtype}, {len(self.excluded)} rows excluded)"

    def file_rows(self, positions: np.ndarray) -> np.ndarray:
        """int64 row ids in ``array`` of kept ``positions`` (any shape, each in [0, len))."""
        positions = np.asarray(positions, dtype=np.int64)
        return positions + np.searchsorted(self._gaps, positions, side="right")

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, slice):
            positions = np.arange(*key.indices(len(self)))
        else:
            positions = np.asarray(key)
            if positions.dtype == bool:
                positions = np.flatnonzero(positions)
            if not np.issubdtype(positions.dtype, np.integer):
                raise IndexError(f"RowsExcept takes slices and integer or boolean row indices, not {key!r}")
            positions = np.where(positions < 0, positions + len(self), positions)
            if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
                raise IndexError(f"row index out of range for {len(self)} rows")
        rows = self.array[self.file_rows(positions)]
        return rows[(slice(None),) * positions.ndim + rest] if rest else rows

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)


def row_batches(array, batch_size: int):
    """Yield (rows, batch) for successive ``batch_size`` rows of ``array`` (n, d): ``rows`` a slice,
    ``batch`` (b, d) float32. ``array`` may be a memory map or :class:`RowsExcept`: one batch is
    read at a time, so a pass over a base larger than memory holds one batch of it."""
    batch_size = check_int(batch_size, "batch_size", low=1)
    for start in range(0, len(array), batch_size):
        rows = slice(start, min(start + batch_size, len(array)))
        yield rows, np.asarray(array[rows], dtype=np.float32)
