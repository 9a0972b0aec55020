"""Input validation shared by every quantizer, reader and CLI command.

One helper per kind of check, each raising an :mod:`explorer.errors` type whose message names
the parameter, the value received and the fix (scikit-learn's ``check_array`` habit).
"""
from __future__ import annotations

import contextlib
import numbers
import os
from pathlib import Path

import numpy as np

from .errors import InvalidParameter, InvalidType


def check_vectors(X, name: str = "X", *, min_rows: int = 1) -> np.ndarray:
    """Return ``X`` as a C-contiguous float32 array of shape (n, d).

    Accepts any real-valued array-like (numpy, torch tensors via ``np.asarray``, nested lists).
    Raises :class:`InvalidType` for non-numeric or non-2-D input and :class:`InvalidParameter`
    for empty input or NaN/inf values.
    """
    if hasattr(X, "detach"):  # a torch tensor, possibly on a GPU
        X = X.detach().cpu().numpy()
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise InvalidType(f"{name} could not be read as an array ({exc}); pass a 2-D numeric array of shape (n, d)") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InvalidType(f"{name} has dtype {arr.dtype}; pass a numeric array (float32 is used internally)")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InvalidType(f"{name} has complex dtype {arr.dtype}; pass real-valued vectors")
    if arr.ndim != 2:
        hint = " Reshape with X.reshape(1, -1) for a single vector or X.reshape(-1, 1) for one feature." if arr.ndim == 1 else ""
        raise InvalidType(f"{name} must be 2-D (n, d); got {arr.ndim}-D array of shape {arr.shape}.{hint}")
    if arr.shape[0] < min_rows or arr.shape[1] == 0:
        raise InvalidParameter(f"{name} is empty (shape {arr.shape}); pass at least {min_rows} vector(s) with d ≥ 1")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise InvalidParameter(
            f"{name} contains NaN or inf (first at row {bad[0]}, column {bad[1]}); "
            "remove or impute those values before training"
        )
    return arr


def check_labels(y, n: int, name: str = "y") -> np.ndarray | None:
    """Return labels as int64 of shape (n,), or None; the length must match the vectors."""
    if y is None:
        return None
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise InvalidType(f"{name} must be 1-D with one label per vector; got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InvalidParameter(f"{name} has {arr.shape[0]} labels but there are {n} vectors; pass one label per vector")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise InvalidType(f"{name} must hold integer class labels; got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def check_int(value, name: str, *, low: int | None = None, high: int | None = None, fix: str = "") -> int:
    """Return ``value`` as int, checking ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidType(f"{name} must be an integer; got {value!r} ({type(value).__name__})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        rng = f"≥ {low}" if high is None else (f"≤ {high}" if low is None else f"in [{low}, {high}]")
        raise InvalidParameter(f"{name}={value} is out of range; it must be {rng}{'. ' + fix if fix else ''}")
    return value


def check_float(value, name: str, *, low: float | None = None, high: float | None = None) -> float:
    """Return ``value`` as float, checking it is finite and within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidType(f"{name} must be a number; got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = [f"≥ {low}" if low is not None else "", f"≤ {high}" if high is not None else ""]
        rng = " and ".join(b for b in bounds if b) or "finite"
        raise InvalidParameter(f"{name}={value} is out of range; it must be finite and {rng}")
    return value


METRICS = ("l2", "ip", "cosine")
"""Search metrics: squared L2; inner product, greater is nearer (faiss ``METRIC_INNER_PRODUCT``);
cosine, the inner product of L2-normalised vectors."""


def check_metric(metric, name: str = "metric") -> str:
    """``metric`` when it is one of :data:`METRICS`; else :class:`InvalidParameter` naming it."""
    if metric not in METRICS:
        raise InvalidParameter(f"{name}={metric!r} is not a metric; use one of {', '.join(METRICS)}")
    return metric


MAX_CODEWORDS = 65536  # codes are stored as uint16 at most


def check_pq_shape(n: int, d: int, n_subspaces: int, n_codewords: int) -> None:
    """Check that M divides d, and that K fits both the code dtype and the training set size."""
    check_int(n_subspaces, "n_subspaces (M)", low=1)
    check_int(n_codewords, "n_codewords (K)", low=2, high=MAX_CODEWORDS, fix="codes are stored as uint16, so K ≤ 65536")
    if d % n_subspaces:
        divisors = [m for m in range(1, d + 1) if d % m == 0]
        raise InvalidParameter(
            f"n_subspaces (M)={n_subspaces} does not divide the dimension d={d}; choose M from {divisors}"
        )
    if n_codewords > n:
        raise InvalidParameter(
            f"n_codewords (K)={n_codewords} exceeds the number of training vectors n={n}; "
            f"use K ≤ {n} or train on more data"
        )


def code_dtype(n_codewords: int) -> np.dtype:
    """Smallest unsigned dtype that holds codes 0..K-1: uint8 for K ≤ 256, else uint16."""
    return np.dtype(np.uint8) if n_codewords <= 256 else np.dtype(np.uint16)


def lazy_vectors(X, name: str = "X"):
    """``X`` unchanged when it is a non-empty 2-D array-like (numpy array, memory map,
    :class:`~explorer.data.RowsExcept`) that a caller reads in batches, validating each; anything
    else through :func:`check_vectors` (which converts lists and the like, and raises for 1-D,
    3-D or empty input)."""
    if getattr(X, "ndim", None) == 2 and len(X) > 0:
        return X
    return check_vectors(X, name)


@contextlib.contextmanager
def errors_name_rows(start: int, stop: int, n: int):
    """Inside, an :class:`InvalidParameter` / :class:`InvalidType` about rows ``start:stop`` of an
    input of ``n`` rows read in batches gets them named: "in rows a–b: …". A batch that is the
    whole input keeps its message as it is."""
    try:
        yield
    except (InvalidParameter, InvalidType) as exc:
        if stop - start == n:
            raise
        raise type(exc)(f"in rows {start}–{stop - 1}: {exc}") from None


def check_codes(codes, n_subspaces: int, n_codewords: int, name: str = "codes", *, as_int64: bool = True) -> np.ndarray:
    """Return codes as int64 (n, M) (or, with ``as_int64=False``, in their own integer dtype, not
    copied), checking shape and range."""
    arr = np.asarray(codes)
    if arr.ndim != 2 or arr.shape[1] != n_subspaces:
        raise InvalidType(f"{name} must have shape (n, M={n_subspaces}); got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidType(f"{name} must be integers; got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_codewords):
        raise InvalidParameter(f"{name} holds values outside [0, {n_codewords - 1}]; were they made by another quantizer?")
    return arr.astype(np.int64, copy=False) if as_int64 else arr


MAX_SEED = 2**31 - 1  # faiss's ClusteringParameters.seed is a C int; numpy and torch take all of [0, 2^31)


def check_random_state(value, name: str = "random_state") -> int:
    """Return the seed ``value`` as an int in [0, 2^31 − 1]; None means 0.

    Every source of randomness (numpy, torch, faiss) is seeded from it, so it must be a plain
    integer all of them accept: a negative seed, one beyond 2^31 − 1 (faiss's k-means seed is a
    C int; torch refuses ≥ 2^64, numpy's RandomState ≥ 2^32), a float, string or
    ``np.random.Generator`` raise
    :class:`InvalidParameter` / :class:`InvalidType` naming ``name`` and the range. (scikit-learn
    also takes a RandomState instance; we do not, because torch and faiss could not share it.)
    """
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidType(f"{name} must be an integer seed in [0, {MAX_SEED}]; got {value!r} ({type(value).__name__}). "
                          "Pass e.g. random_state=0 (a numpy Generator or RandomState cannot seed torch and faiss too)")
    return check_int(value, name, low=0, high=MAX_SEED, fix="seeds are non-negative 32-bit integers (faiss takes a C int), e.g. 0 or 12345")


def check_finite_rows(X, name: str, *, batch_size: int = 65536) -> None:
    """Raise :class:`InvalidParameter` naming ``name`` and the first (row, column) of ``X`` (n, d)
    that is NaN or ±inf; rows are counted in ``X`` itself.

    ``X`` may be a memory map: it is read ``batch_size`` rows at a time. The CLI calls this on a
    data file *before* holding queries out of it, so the row named is the file's row (after the
    split, row i of the base is another row of the file). Integer dtypes are finite: no read.
    """
    if not np.issubdtype(np.asarray(X[:0]).dtype, np.floating):
        return
    for start in range(0, len(X), batch_size):
        batch = np.asarray(X[start:start + batch_size])
        bad = ~np.isfinite(batch)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise InvalidParameter(f"{name} contains NaN or inf (first at row {start + row}, column {col}); "
                                   "remove or impute those values before training")


def count_distinct_rows(X, *, batch_size: int = 65536) -> int:
    """Number of distinct rows of ``X`` (n, d), which may be a memory map (read in batches).

    Rows are compared through a seeded random projection to float64 (one number per row), so
    this costs O(n·d) reads plus one sort of n numbers and holds n float64, never a copy of X;
    two different rows collide with probability ~0. Used to warn when fewer distinct vectors than
    codewords K are given: k-means (or any encoder) can then use at most that many codewords per
    subspace, the rest stay dead and recall collapses.
    """
    proj = np.random.default_rng(12345).standard_normal(X.shape[1])
    keys = [np.asarray(X[s:s + batch_size], dtype=np.float64) @ proj for s in range(0, len(X), batch_size)]
    return int(len(np.unique(np.concatenate(keys)))) if keys else 0


def check_output_path(path, flag: str, suffix: str | None = None, *, folder: bool = False) -> Path:
    """Return ``path`` as a Path after checking that the command can write it, before any work.

    ``folder=False`` (``--json``, ``--csv``, ``--index``): ``path`` names a file (not an existing
    folder) in an existing folder where a file can be created. ``folder=True`` (``--checkpoint``):
    ``path`` is a folder, or does not exist yet and can be created (its nearest existing parent
    is a folder where we can write). Writability is tried, not guessed from permission bits
    (which say "yes" to root on a read-only mount): an exclusive temporary file is created there
    and removed, the way :mod:`explorer.atomic` will write. Raises :class:`InvalidParameter`
    naming ``flag``, the path and the fix; the CLI prints it as one line and exits 2. ``suffix``
    (".npy"): the file name must end in it.
    """
    from .atomic import _create_temp  # the write it will do: an exclusive temp file in that folder
    p = Path(os.fspath(path))
    if suffix is not None and p.suffix.lower() != suffix:
        raise InvalidParameter(f"{flag} {path}: must end in {suffix}")
    if folder:
        if p.exists() and not p.is_dir():
            raise InvalidParameter(f"{flag} {path}: is a file, not a folder; give a folder (created if missing) "
                                   "to hold checkpoint.pt")
        probe_in = p
        while not probe_in.exists():
            probe_in = probe_in.parent
        if not probe_in.is_dir():
            raise InvalidParameter(f"{flag} {path}: cannot be created because {probe_in} is a file; "
                                   "choose another folder")
    else:
        if p.is_dir():
            raise InvalidParameter(f"{flag} {path}: is a folder, not a file; give a file path such as {p}/NAME")
        probe_in = p.parent
        if not probe_in.is_dir():
            what = "is a file" if probe_in.exists() else "does not exist"
            raise InvalidParameter(f"{flag} {path}: folder {probe_in} {what}; create the folder first "
                                   "or give a path in an existing one")
    try:
        fd, probe = _create_temp(probe_in / (p.name or "out"))
    except OSError as exc:
        raise InvalidParameter(f"{flag} {path}: cannot write in {probe_in} ({exc.strerror or exc}); "
                               "choose a folder you can write to") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return p
