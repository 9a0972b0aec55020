"""Readers (and writers) for this field's file formats: TEXMEX ``.fvecs``/``.ivecs``/``.bvecs`` and
``.npy`` (memory-mapped), IDX (MNIST, optionally gzipped), ``.npz`` of named arrays and the
ann-benchmarks ``.hdf5`` layout; every malformed file raises :class:`~explorer.errors.DataFileError`
naming it (see :mod:`explorer.data` for the formats)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..atomic import atomic_open
from ..errors import DataFileError, InvalidParameter, PQXError
from ..validation import check_labels
from .dataset import BUILTINS, Dataset


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
    with atomic_open(path, "wb") as fh:
        fh.write(payload)


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
