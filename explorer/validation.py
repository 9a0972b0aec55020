"""Input validation shared by every quantizer, reader and CLI command.

One helper per kind of check, each raising an :mod:`explorer.errors` type whose message names
the parameter, the value received and the fix (scikit-learn's ``check_array`` habit).
"""
from __future__ import annotations

import contextlib
import numbers

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
