"""A lazy base (RowsExcept over a memory map) that records the rows of each read and refuses to be
read whole, for tests proving that a consumer reads a base in batches; and digits split on disk."""
import numpy as np

from explorer import data


class WatchedRows(data.RowsExcept):
    """``reads``: the number of rows each indexing returned; ``np.asarray`` of it raises."""

    def __init__(self, array, excluded):
        super().__init__(array, excluded)
        self.reads = []

    def __getitem__(self, key):
        rows = super().__getitem__(key)
        self.reads.append(len(rows))
        return rows

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole base was read at once")


def mapped_digits(folder, n_queries: int = 200, random_state: int = 0) -> data.Dataset:
    """Digits written to ``folder`` (base.fvecs, labels.npy) and split as ``data.split_queries`` splits
    the file: the base a RowsExcept over the memory map, the same rows as the in-memory split's."""
    ds = data.load("digits")
    data.write_vecs(folder / "base.fvecs", ds.base)
    np.save(folder / "labels.npy", ds.labels)
    return data.split_queries(data.load(folder / "base.fvecs", labels=folder / "labels.npy"), n_queries,
                              random_state=random_state)
