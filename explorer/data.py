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

import gzip
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import DataFileError, InvalidParameter, InvalidType, PQXError
from .validation import check_int, check_labels, check_vectors

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
BUILTINS = ("digits", "synthetic", "fashion-mnist")


@dataclass(frozen=True)
class Dataset:
    """Vectors to quantize, with optional labels and queries.

    base: (n, d) float32 (may be a read-only memory map); labels: (n,) int64 or None;
    queries: (nq, d) float32 or None; query_labels: (nq,) or None; image_shape: (h, w) when
    the vectors are images (digits 8×8, Fashion-MNIST 28×28), so image models can reshape them.
    neighbors: (nq, k) int64 ids of each query's exact nearest base vectors when the file gave
    them (ann-benchmarks ``neighbors``): evaluation uses them as given instead of computing its
    own; metric: the metric ("l2", "ip", "cosine") that ground truth was made with, when known.
    """

    name: str
    base: np.ndarray
    labels: np.ndarray | None = None
    queries: np.ndarray | None = None
    query_labels: np.ndarray | None = None
    image_shape: tuple[int, int] | None = None
    neighbors: np.ndarray | None = None
    metric: str | None = None

    @property
    def n(self) -> int:
        return int(self.base.shape[0])

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])

    def __repr__(self) -> str:
        q = "none" if self.queries is None else str(len(self.queries))
        return (f"Dataset({self.name!r}, base={self.base.shape}, labels={'yes' if self.labels is not None else 'no'}, "
                f"queries={q})")


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


NPZ_NAMES = {"base": ("base", "train", "x"), "queries": ("queries", "test"),
             "labels": ("labels", "train_labels", "y"), "query_labels": ("query_labels", "test_labels"),
             "neighbors": ("neighbors", "ground_truth")}
"""Array names :func:`read_npz_dataset` looks for, per :class:`Dataset` field, first match wins."""


def read_npz_dataset(path, base_key: str | None = None) -> Dataset:
    """A :class:`Dataset` of the named arrays in an ``.npz`` file (see the module docstring for the
    names); ``base_key`` names the base array when it is not one of :data:`NPZ_NAMES` ``["base"]``.
    The file is read with ``allow_pickle=False``; its arrays are loaded into memory."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError) as exc:
        raise DataFileError(f"{path}: not a readable .npz file ({exc})") from None
    if base_key is not None:
        if base_key not in arrays:
            raise DataFileError(f"{path}: has no array {base_key!r} (--base-key); it holds {', '.join(arrays) or 'none'}")
        key = base_key
    else:
        found = [n for n in NPZ_NAMES["base"] if n in arrays]
        if not found and len(arrays) != 1:
            raise DataFileError(f"{path}: which array is the base? it holds {', '.join(arrays) or 'none'}; "
                                f"name it {' or '.join(NPZ_NAMES['base'])}, or pass base_key (--base-key NAME)")
        key = found[0] if found else next(iter(arrays))
    fields = {"base": _as_matrix(arrays[key], path, key)}
    for field_name, names in NPZ_NAMES.items():
        if field_name != "base":
            hit = next((n for n in names if n in arrays and n != key), None)
            if hit is not None:
                fields[field_name] = arrays[hit]
    if "queries" in fields:
        fields["queries"] = _as_matrix(fields["queries"], path, "queries")
    return _checked_dataset(path, **fields)


def _as_matrix(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    """``array`` as (n, d) (images flattened); :class:`DataFileError` naming ``path`` and ``what`` otherwise."""
    if array.ndim < 2 or array.shape[0] == 0 or not np.issubdtype(array.dtype, np.number):
        raise DataFileError(f"{path}: array {what!r} has shape {array.shape} and dtype {array.dtype}; "
                            "vectors must be a numeric (n, d) array with n ≥ 1")
    return array.reshape(array.shape[0], int(np.prod(array.shape[1:])))


def _checked_dataset(path: Path, base, queries=None, labels=None, query_labels=None, neighbors=None,
                     metric=None) -> Dataset:
    """A Dataset from a file's arrays, every shape checked against the base; errors name ``path``."""
    if queries is not None and queries.shape[1] != base.shape[1]:
        raise DataFileError(f"{path}: queries have d={queries.shape[1]} but the base has d={base.shape[1]}")
    try:
        labels = check_labels(None if labels is None else np.asarray(labels).reshape(-1), len(base), "labels")
        nq = 0 if queries is None else len(queries)
        if query_labels is not None:
            if queries is None:
                raise InvalidParameter("query labels are given but no queries")
            query_labels = check_labels(np.asarray(query_labels).reshape(-1), nq, "query labels")
    except PQXError as exc:
        raise DataFileError(f"{path}: {exc}") from None
    if neighbors is not None:
        neighbors = np.asarray(neighbors)
        if queries is None or neighbors.ndim != 2 or len(neighbors) != nq or not np.issubdtype(neighbors.dtype, np.integer):
            raise DataFileError(f"{path}: neighbors have shape {neighbors.shape} ({neighbors.dtype}); "
                                f"they must be integer ids (nq={nq}, k) of the queries' nearest base vectors")
        if neighbors.size and (neighbors.min() < 0 or neighbors.max() >= len(base)):
            raise DataFileError(f"{path}: neighbors hold ids outside [0, {len(base) - 1}]; they must index the base")
        neighbors = neighbors.astype(np.int64)
    return Dataset(path.stem, base, labels, queries, query_labels, neighbors=neighbors, metric=metric)


HDF5_METRICS = {"euclidean": "l2", "angular": "cosine", "dot": "ip", "ip": "ip", "inner_product": "ip"}
"""ann-benchmarks ``distance`` attribute → our metric name."""


def read_hdf5_dataset(path) -> Dataset:
    """A :class:`Dataset` of an ann-benchmarks HDF5 file: ``train`` (base), ``test`` (queries),
    ``neighbors`` (given ground truth), ``distance`` attribute (its metric); read into memory.
    Needs ``h5py`` (imported here only); raises :class:`DataFileError` naming the file when
    ``train`` is missing or the file is not HDF5, :class:`InvalidParameter` with the install
    command when h5py is absent."""
    path = Path(path)
    try:
        import h5py
    except ImportError:
        raise InvalidParameter(f"{path}: reading HDF5 needs h5py, which is not installed; "
                               "install it with: pip install 'pq-explorer[hdf5]' (or pip install h5py)") from None
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise DataFileError(f"{path}: not a readable HDF5 file ({exc})") from None
    with fh:
        if "train" not in fh:
            raise DataFileError(f"{path}: has no 'train' dataset (it holds {', '.join(fh.keys()) or 'nothing'}); "
                                "the ann-benchmarks layout is train, test, neighbors, distances")
        distance = fh.attrs.get("distance")
        distance = distance.decode() if isinstance(distance, bytes) else distance
        metric = None if distance is None else HDF5_METRICS.get(str(distance).lower())
        if distance is not None and metric is None:
            raise DataFileError(f"{path}: distance {distance!r} is not one PQ Explorer searches by; "
                                f"supported: {', '.join(HDF5_METRICS)}")
        fields = {"base": _as_matrix(fh["train"][()], path, "train")}
        if "test" in fh:
            fields["queries"] = _as_matrix(fh["test"][()], path, "test")
            if "neighbors" in fh:
                fields["neighbors"] = fh["neighbors"][()]
    return _checked_dataset(path, metric=metric, **fields)


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write via a temporary file in the same folder, then rename: no half-written file is left."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def read_vectors(path) -> np.ndarray:
    """Read a vector file by its extension: .fvecs, .ivecs, .bvecs, .npy, .idx/.idx3-ubyte/.gz (IDX),
    .npz and .hdf5/.h5 (their base array: see :func:`read_npz_dataset`, :func:`read_hdf5_dataset`).

    Returns an (n, d) array (memory-mapped where the format allows); IDX images are flattened.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: no such file; give a path to an .fvecs, .ivecs, .bvecs, .npy, .npz, .hdf5 or IDX file, "
                            f"or one of the built-in datasets: {', '.join(BUILTINS)}")
    name = path.name.lower()
    if name.endswith(".npz"):
        return read_npz_dataset(path).base
    if name.endswith((".hdf5", ".h5")):
        return read_hdf5_dataset(path).base
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
        raise DataFileError(f"{path}: unknown format; supported extensions are .fvecs, .ivecs, .bvecs, .npy, .npz, "
                            ".hdf5/.h5 and IDX")
    if arr.ndim <= 1:
        return arr
    return arr.reshape(arr.shape[0], int(np.prod(arr.shape[1:])))  # explicit width: -1 fails on 0 rows


# --------------------------------------------------------------------------- entry point
def load(name_or_path: str | os.PathLike = "digits", *, labels: str | os.PathLike | None = None,
         queries: str | os.PathLike | None = None, query_labels: str | os.PathLike | None = None,
         base_key: str | None = None, **options) -> Dataset:
    """Load a built-in dataset by name or vectors from a file.

    name_or_path: "digits" (default), "synthetic" (``options``: n, d, n_clusters, spread,
        random_state), "fashion-mnist", or a path readable by :func:`read_vectors`; an ``.npz``
        or ann-benchmarks ``.hdf5`` file gives its queries, labels and ground truth too (module
        docstring), ``base_key`` choosing the ``.npz`` array that is the base.
    labels: optional path to per-vector labels (.npy, .ivecs or IDX).
    queries: optional path to query vectors in any supported format (they replace the file's own).
    query_labels: optional path to the queries' labels (needs queries): with ``labels`` it
        makes mAP measurable on a separate query file.
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
    """(train_size,) sorted int64 ids of the seeded training sample of ``ds.base`` (:func:`sample_rows`),
    or None for the whole base; nothing is read. ``name`` is how an out-of-range size is named in
    the error (the CLI says ``--train-size``)."""
    if train_size is None:
        return None
    size = check_int(train_size, name, low=1, high=ds.n,
                     fix=f"Give at most the {ds.n} base vectors (queries excluded), "
                         f"or leave {name} out to fit on all of them")
    return sample_rows(ds.n, size, random_state)


def training_set(ds: Dataset, train_size: int | None, random_state: int = 0, *, name: str = "train_size"):
    """(X, labels) to fit on: the whole base and its labels, or with ``train_size`` the seeded
    sample of that many base rows (:func:`training_rows`), so that only they are read from a
    memory-mapped base. Labels are None when the dataset has none. Shared by ``pqx train
    --train-size`` and :func:`explorer.sweep.sweep`, so both fit on the same rows for a seed."""
    rows = training_rows(ds, train_size, random_state, name=name)
    if rows is None:
        return ds.base, ds.labels
    return ds.base[rows], None if ds.labels is None else ds.labels[rows]


def ground_truth(ds: Dataset, k: int = 100, *, metric: str = "l2") -> np.ndarray:
    """(nq, k) int64 ids of each query's exact nearest base vectors by ``metric`` ("l2": faiss
    ``IndexFlatL2``; "ip", "cosine": ``IndexFlatIP``, on unit rows for cosine), searched in chunks
    of the base (:func:`~explorer.search.exact_knn`), so a memory-mapped base is not loaded whole."""
    from .search import exact_knn
    if ds.queries is None:
        raise InvalidParameter("the dataset has no queries; call split_queries(ds, n_queries) first")
    return exact_knn(ds.base, ds.queries, k, metric=metric)[1]
