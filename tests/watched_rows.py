"""A lazy base (RowsExcept over a memory map) that records the rows of each read and refuses to be
read whole, for tests proving that a consumer reads a base in batches."""
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
