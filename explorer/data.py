"""Datasets: built-ins that never download, readers for this field's file formats, splits.

Built-ins
  ``digits``        scikit-learn's bundled 8×8 digits: 1,797 × 64 float32, labels 0–9 (default).
  ``synthetic``     a seeded Gaussian mixture with labels; n, d and clusters configurable.
  ``fashion-mnist`` 70,000 × 784 images from Debian's ``dataset-fashion-mnist`` package
                    (IDX files in /usr/share/datasets/fashion-mnist), read only if installed.

Readers (by file extension): ``.fvecs`` / ``.ivecs`` / ``.bvecs`` (TEXMEX format: each vector is
an int32 dimension followed by d values; memory-mapped, so a 1M×128 file is not read whole),
IDX (MNIST format, optionally ``.gz``) and ``.npy`` (memory-mapped). A malformed file raises
:class:`~explorer.errors.DataFileError` naming the file and what is wrong.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import DataFileError, InvalidParameter
from .validation import check_int, check_labels, check_vectors

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
BUILTINS = ("digits", "synthetic", "fashion-mnist")


@dataclass(frozen=True)
class Dataset:
    """Vectors to quantize, with optional labels and queries.

    base: (n, d) float32 (may be a read-only memory map); labels: (n,) int64 or None;
    queries: (nq, d) float32 or None; query_labels: (nq,) or None; image_shape: (h, w) when
    the vectors are images (digits 8×8, Fashion-MNIST 28×28), so image models can reshape them;
    learn: (n_learn, d) or None, a separate training set (SIFT1M's ``learn`` file): when given,
    fits use it (:func:`training_set`) and the base is only encoded and evaluated.
    """

    name: str
    base: np.ndarray
    labels: np.ndarray | None = None
    queries: np.ndarray | None = None
    query_labels: np.ndarray | None = None
    image_shape: tuple[int, int] | None = None
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


# --------------------------------------------------------------------------- built-ins
def load_digits() -> Dataset:
    """scikit-learn's bundled digits (no download): 1,797 × 64 float32 in [0, 16], labels 0–9."""
    from sklearn.datasets import load_digits as _load
    bunch = _load()
    return Dataset("digits", bunch.data.astype(np.float32), bunch.target.astype(np.int64), image_shape=(8, 8))


def make_synthetic(n: int = 5000, d: int = 32, n_clusters: int = 20, *, spread: float = 0.5,
                   random_state: int = 0) -> Dataset:
    """A seeded Gaussian mixture: ``n_clusters`` centres ~ N(0, I_d), points = centre + spread·N(0, I_d).

    Returns ``n`` × ``d`` float32 vectors with their cluster as the label.
    """
    n = check_int(n, "n", low=1)
    d = check_int(d, "d", low=1)
    n_clusters = check_int(n_clusters, "n_clusters", low=1)
    rng = np.random.default_rng(random_state)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    labels = rng.integers(0, n_clusters, size=n)
    X = centres[labels] + spread * rng.standard_normal((n, d)).astype(np.float32)
    return Dataset("synthetic", X.astype(np.float32), labels.astype(np.int64))


def make_sift_like(n: int = 20000, d: int = 128, n_clusters: int = 64, *, rank: int = 16,
                   random_state: int = 0) -> np.ndarray:
    """A seeded SIFT-like set (n, d) float32: non-negative, clustered, correlated, integer-valued.

    SIFT descriptors are histograms of gradients: non-negative, mostly small with a few large
    bins, strongly correlated across bins, clustered by image content. Here: ``n_clusters``
    centres ``relu(A_c B)`` (A_c ~ N(0, I_rank), B (rank, d) shared, so bins co-vary), each point
    its centre plus ``relu``'d low-rank and isotropic noise, scaled so the largest coordinate is
    about 150 and rounded to integers as SIFT1M's bytes are. No labels; draw learn, base and
    queries from one call (disjoint rows) so they share the distribution.
    """
    n = check_int(n, "n", low=1)
    d = check_int(d, "d", low=1)
    n_clusters = check_int(n_clusters, "n_clusters", low=1)
    rank = check_int(rank, "rank", low=1)
    rng = np.random.default_rng(random_state)
    mix = rng.standard_normal((rank, d)) / np.sqrt(rank)
    centres = np.maximum(rng.standard_normal((n_clusters, rank)) @ mix, 0.0)
    labels = rng.integers(0, n_clusters, size=n)
    noise = 0.5 * rng.standard_normal((n, rank)) @ mix + 0.15 * rng.standard_normal((n, d))
    X = np.maximum(centres[labels] + noise, 0.0)
    X = np.rint(X * (150.0 / max(float(np.quantile(X, 0.999)), 1e-12)))
    return X.astype(np.float32)


def load_fashion_mnist(directory: str | os.PathLike = FASHION_MNIST_DIR) -> Dataset:
    """Fashion-MNIST's 70,000 images (train then test) as 784-d float32 in [0, 1], labels 0–9.

    Read from the IDX files of Debian's ``dataset-fashion-mnist``; never downloaded.
    """
    directory = Path(directory)
    parts = []
    for split in ("train", "t10k"):
        images = directory / f"{split}-images-idx3-ubyte.gz"
        labels = directory / f"{split}-labels-idx1-ubyte.gz"
        if not images.exists() or not labels.exists():
            raise DataFileError(
                f"Fashion-MNIST is not installed (no {images}); install it with "
                "'sudo apt-get install dataset-fashion-mnist' (listed in binder/apt.txt), "
                "or use --data digits"
            )
        parts.append((read_idx(images), read_idx(labels)))
    X = np.concatenate([p[0] for p in parts]).reshape(-1, 28 * 28).astype(np.float32) / 255.0
    y = np.concatenate([p[1] for p in parts]).astype(np.int64)
    return Dataset("fashion-mnist", X, y, image_shape=(28, 28))


# --------------------------------------------------------------------------- readers
def _vecs_mmap(path: Path, value_dtype: np.dtype, itemsize: int) -> np.ndarray:
    """Memory-map a TEXMEX file whose records are [int32 d][d values of ``itemsize`` bytes]."""
    size = path.stat().st_size
    if size < 4:
        raise DataFileError(f"{path}: file is {size} bytes, too short to hold a vector header; is it truncated?")
    d = int(np.fromfile(path, dtype="<i4", count=1)[0])
    if d <= 0 or d > 1 << 20:
        raise DataFileError(f"{path}: first record declares dimension {d}; not a {path.suffix} file (wrong format or byte order?)")
    record = 4 + d * itemsize
    if size % record:
        raise DataFileError(
            f"{path}: size {size} bytes is not a multiple of the record size {record} (4 + {d}×{itemsize}); "
            "the file is truncated or its vectors have inconsistent dimensions"
        )
    n = size // record
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, record))
    dims = raw[:, :4].copy().view("<i4").ravel() if n <= 100_000 else None
    if dims is None:  # check a strided sample of headers without touching the whole file
        idx = np.unique(np.linspace(0, n - 1, num=10_000).astype(np.int64))
        dims = raw[idx, :4].copy().view("<i4").ravel()
    if (dims != d).any():
        bad = int(np.flatnonzero(dims != d)[0])
        raise DataFileError(f"{path}: inconsistent dimensions (record 0 says {d}, another says {dims[bad]}); the file is corrupt")
    return np.ndarray((n, d), dtype=value_dtype, buffer=raw, offset=4, strides=(record, itemsize))


def read_fvecs(path) -> np.ndarray:
    """(n, d) float32 read-only memory map of an ``.fvecs`` file."""
    return _vecs_mmap(Path(path), np.dtype("<f4"), 4)


def read_ivecs(path) -> np.ndarray:
    """(n, d) int32 read-only memory map of an ``.ivecs`` file (e.g. ground-truth ids)."""
    return _vecs_mmap(Path(path), np.dtype("<i4"), 4)


def read_bvecs(path) -> np.ndarray:
    """(n, d) uint8 read-only memory map of a ``.bvecs`` file (SIFT1B style)."""
    return _vecs_mmap(Path(path), np.dtype(np.uint8), 1)


def write_vecs(path, X: np.ndarray) -> None:
    """Write X (n, d) as .fvecs (float32), .ivecs (int32) or .bvecs (uint8), by extension."""
    path = Path(path)
    dtype = {".fvecs": "<f4", ".ivecs": "<i4", ".bvecs": np.uint8}.get(path.suffix)
    if dtype is None:
        raise InvalidParameter(f"path {path} must end in .fvecs, .ivecs or .bvecs")
    X = np.asarray(X)
    n, d = X.shape
    itemsize = np.dtype(dtype).itemsize
    rec = np.empty((n, 4 + d * itemsize), dtype=np.uint8)
    rec[:, :4] = np.full((n, 1), d, dtype="<i4").view(np.uint8)
    rec[:, 4:] = np.ascontiguousarray(X.astype(dtype)).view(np.uint8).reshape(n, -1)
    _atomic_write_bytes(path, rec.tobytes())


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Array stored in an IDX file (MNIST format: magic 0x0000 TT ND, ND big-endian int32 sizes, data),
    plain or gzipped. Returns the array in its native shape, e.g. (60000, 28, 28) uint8."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DataFileError(f"{path}: cannot read ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataFileError(f"{path}: bad IDX magic number {data[:4].hex() if data else 'empty file'}; not an IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataFileError(f"{path}: IDX header declares {ndim} dimensions but the file ends at {len(data)} bytes")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataFileError(f"{path}: IDX shape {shape} needs {expected} data bytes but the file has {len(data) - header}; "
                            "it is truncated or corrupt")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array: np.ndarray) -> None:
    """Write an array as IDX (gzipped when ``path`` ends in .gz)."""
    path = Path(path)
    array = np.asarray(array)
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B, np.dtype(np.int32): 0x0C,
            np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}[array.dtype]
    body = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    body += array.astype(array.dtype.newbyteorder(">")).tobytes()
    _atomic_write_bytes(path, gzip.compress(body) if path.suffix == ".gz" else body)


def read_npy(path) -> np.ndarray:
    """Array in a ``.npy`` file, memory-mapped read-only."""
    path = Path(path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataFileError(f"{path}: not a readable .npy file ({exc})") from None


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write via a temporary file in the same folder, then rename: no half-written file is left."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def read_vectors(path) -> np.ndarray:
    """Read a vector file by its extension: .fvecs, .ivecs, .bvecs, .npy, .idx/.idx3-ubyte/.gz (IDX).

    Returns an (n, d) array (memory-mapped where the format allows); IDX images are flattened.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: no such file; give a path to an .fvecs, .ivecs, .bvecs, .npy or IDX file, "
                            f"or one of the built-in datasets: {', '.join(BUILTINS)}")
    name = path.name.lower()
    if name.endswith(".fvecs"):
        arr = read_fvecs(path)
    elif name.endswith(".ivecs"):
        arr = read_ivecs(path)
    elif name.endswith(".bvecs"):
        arr = read_bvecs(path)
    elif name.endswith(".npy"):
        arr = read_npy(path)
    elif "idx" in name or name.endswith("-ubyte") or name.endswith("-ubyte.gz"):
        arr = read_idx(path)
    else:
        raise DataFileError(f"{path}: unknown format; supported extensions are .fvecs, .ivecs, .bvecs, .npy and IDX")
    if arr.ndim <= 1:
        return arr
    return arr.reshape(arr.shape[0], int(np.prod(arr.shape[1:])))  # explicit width: -1 fails on 0 rows


# --------------------------------------------------------------------------- entry point
def load(name_or_path: str | os.PathLike = "digits", *, labels: str | os.PathLike | None = None,
         queries: str | os.PathLike | None = None, learn: str | os.PathLike | None = None, **options) -> Dataset:
    """Load a built-in dataset by name or vectors from a file.

    name_or_path: "digits" (default), "synthetic" (``options``: n, d, n_clusters, spread,
        random_state), "fashion-mnist", or a path readable by :func:`read_vectors`.
    labels: optional path to per-vector labels (.npy, .ivecs or IDX).
    queries: optional path to query vectors in any supported format.
    learn: optional path to a separate training set in any supported format (SIFT1M's layout:
        fit on ``learn``, encode and evaluate ``base``, search with ``queries``).
    File-backed bases stay memory-mapped; they are converted to float32 in batches by consumers.
    """
    key = str(name_or_path)
    if key == "digits":
        ds = load_digits()
    elif key == "synthetic":
        ds = make_synthetic(**options)
    elif key in ("fashion-mnist", "fashion_mnist"):
        ds = load_fashion_mnist()
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
        ds = replace(ds, queries=q)
    if learn is not None:
        train = read_vectors(learn)
        if train.ndim != 2 or train.shape[1] != ds.dim or train.shape[0] == 0:
            raise DataFileError(f"{learn}: learn vectors have shape {train.shape} but the base vectors have "
                                f"d={ds.dim}; give a learn file of at least one {ds.dim}-dim vector")
        ds = replace(ds, learn=train)
    return ds


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
    ids = np.sort(np.random.default_rng(random_state).choice(ds.n, size=n_queries, replace=False))
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
    return np.sort(np.random.default_rng(random_state).choice(n, size=size, replace=False))


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


def ground_truth(ds: Dataset, k: int = 100) -> np.ndarray:
    """(nq, k) int64 ids of each query's exact nearest base vectors by L2 (faiss ``IndexFlatL2``),
    searched in chunks of the base (:func:`~explorer.search.exact_knn`), so a memory-mapped base is not loaded whole."""
    from .search import exact_knn
    if ds.queries is None:
        raise InvalidParameter("the dataset has no queries; call split_queries(ds, n_queries) first")
    return exact_knn(ds.base, ds.queries, k)[1]
