"""Export a trained quantizer as a faiss index holding a whole base, for serving at scale.

Three layouts, chosen by the method and ``nlist``:

- PQ → ``IndexPQ``: exhaustive ADC, M·log2 K bits per vector.
- OPQ → ``IndexPreTransform(LinearTransform R, IndexPQ)``: the learned rotation runs inside faiss.
- either with ``nlist`` → IVF-PQ (``IndexIVFPQ``, wrapped in the rotation for OPQ): a coarse
  k-means with ``nlist`` lists, and PQ codebooks trained on the residuals z − c_coarse(z)
  (Jégou et al. 2011, Sec. IV.A). Searching with ``nprobe = nlist`` is exhaustive and equals
  :func:`ivf_adc_search`; smaller ``nprobe`` trades recall for speed.

The base is read and added ``batch_size`` rows at a time, so a memory-mapped ``.fvecs``/
``.bvecs``/``.npy`` larger than memory is never copied whole; only the codes are held (by
faiss). Training uses a seeded sample of at most ``train_size`` rows. The index file is written
to a temporary name and renamed, so a failed export leaves no partial index.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import methods
from .atomic import atomic_path
from .errors import InvalidParameter
from .kmeans import init_random_points, lloyd
from .methods.base import Quantizer
from .search import adc_search, faiss_nbits, faiss_pq, with_rotation
from .validation import check_int, check_vectors


@dataclass
class IndexModel:
    """What an exported index is made of.

    quantizer: the fitted method (its ``transform``: identity for PQ, rotation for OPQ).
    coarse: (nlist, D) float32 coarse centroids in the transformed space, or None (flat PQ).
    residual: the PQ fitted on residuals (IVF-PQ), or None.
    """

    quantizer: Quantizer
    coarse: np.ndarray | None = None
    residual: Quantizer | None = None

    @property
    def codebooks(self) -> np.ndarray:
        """(M, K, D/M) float32: the codebooks the index stores."""
        return (self.residual or self.quantizer).codebooks_


def _check_exportable(quantizer: Quantizer) -> None:
    """Refuse, before training, what a faiss PQ index cannot hold: a network encoder, or K not a power of 2."""
    from .methods.pq import PQ  # PQ and its subclasses (OPQ) have linear transforms faiss can apply
    faiss_nbits(quantizer.n_codewords)
    if not isinstance(quantizer, PQ):
        raise InvalidParameter(f"method {quantizer.name!r} encodes through a network that faiss cannot run; "
                               "export supports pq and opq (for deep methods, index quantizer.transform(X) yourself)")


def coarse_kmeans(Z: np.ndarray, nlist: int, random_state: int = 0, n_iter: int = 20) -> np.ndarray:
    """(nlist, D) float32 coarse centroids: our Lloyd k-means (one "subspace" of full dimension) on Z (n, D)."""
    gen = torch.Generator().manual_seed(int(random_state))
    Xs = torch.from_numpy(np.ascontiguousarray(Z, dtype=np.float32))[None]  # (1, n, D)
    C = init_random_points(Xs, nlist, gen)
    for _ in lloyd(Xs, C, n_iter, np.random.default_rng(random_state)):
        pass
    return C[0].numpy().copy()


def train_index_model(method: str, params: dict, train: np.ndarray, nlist: int | None = None, *,
                      stop=None) -> IndexModel:
    """Fit ``method`` on ``train`` (n, d); with ``nlist``, also the coarse k-means and the residual PQ.

    ``nlist`` is checked (1 ≤ nlist ≤ n) before any training. ``stop`` (a
    :class:`~explorer.events.StopSignal`) ends the fit after its current step; once set, the
    IVF stages are skipped and the model returned as it is (the caller decides what to keep).
    """
    quantizer = methods.create(method, **params)
    _check_exportable(quantizer)
    if nlist is not None:
        nlist = check_int(nlist, "--ivf NLIST", low=1, high=len(train), fix="use at most one list per training vector")
    quantizer.fit(train, stop=stop)
    if nlist is None or (stop is not None and stop.is_set()):
        return IndexModel(quantizer)
    Z = quantizer.transform(train)
    coarse = coarse_kmeans(Z, nlist, params.get("random_state", 0))
    lists = assign_lists(Z, coarse)
    residual = methods.create("pq", n_subspaces=quantizer.n_subspaces, n_codewords=quantizer.n_codewords,
                              random_state=params.get("random_state", 0), device=params.get("device", "cpu") or "cpu")
    residual.fit(Z - coarse[lists], stop=stop)
    return IndexModel(quantizer, coarse, residual)


def assign_lists(Z: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """(n,) int64 nearest coarse centroid of each row of Z (n, D)."""
    from .kmeans import assign_nearest
    assign, _ = assign_nearest(torch.from_numpy(np.ascontiguousarray(Z, dtype=np.float32))[None],
                               torch.from_numpy(coarse)[None])
    return assign[0].numpy()


def empty_index(model: IndexModel):
    """The faiss index for ``model``, trained and empty: IndexPQ, IVF-PQ, wrapped in the rotation for OPQ."""
    import faiss
    M, K, ds = model.codebooks.shape
    D = M * ds
    if model.coarse is None:
        inner = faiss_pq(D, M, K, model.codebooks)
    else:
        nlist = len(model.coarse)
        coarse = faiss.IndexFlatL2(D)
        coarse.add(np.ascontiguousarray(model.coarse, dtype=np.float32))
        inner = faiss.IndexIVFPQ(coarse, D, nlist, M, faiss_nbits(K))  # faiss's wrapper keeps `coarse` alive
        faiss.copy_array_to_vector(np.ascontiguousarray(model.codebooks, dtype=np.float32).ravel(), inner.pq.centroids)
        inner.is_trained = True
        inner.precompute_table()
    return with_rotation(inner, getattr(model.quantizer, "rotation_", None))


def add_in_batches(index, base: np.ndarray, batch_size: int = 65536, progress=None) -> None:
    """Add ``base`` (n, d), e.g. a memory map, to ``index`` ``batch_size`` rows at a time (each validated)."""
    batch_size = check_int(batch_size, "batch_size", low=1)
    for start in range(0, len(base), batch_size):
        stop = min(start + batch_size, len(base))
        index.add(check_vectors(base[start:stop], f"base rows {start}–{stop - 1}"))
        if progress is not None:
            progress(stop, len(base))


def write_index_atomic(index, path: str | os.PathLike) -> Path:
    """``faiss.write_index`` through a temporary file in the same folder and a rename."""
    import faiss
    path = Path(path)
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    return path


def ivf_adc_search(model: IndexModel, queries, base, k: int = 10, batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Our exhaustive ADC over an IVF-PQ model (what faiss returns with ``nprobe = nlist``).

    d(q, x) = Σ_m ||(z_q − c_l(x))_m − C_m[code_m(x)]||², with z = transform(·), l(x) the
    coarse list of x and codes those of the residual z_x − c_l(x). Returns (distances, ids) (nq, k).
    """
    Zq = model.quantizer.transform(queries)
    lists, codes = [], []
    for start in range(0, len(base), batch_size):
        Z = model.quantizer.transform(base[start:start + batch_size])
        lab = assign_lists(Z, model.coarse)
        lists.append(lab)
        codes.append(model.residual.encode(Z - model.coarse[lab]))
    lists, codes = np.concatenate(lists), np.concatenate(codes)
    best_d = np.full((len(Zq), 0), np.inf, dtype=np.float32)
    best_i = np.zeros((len(Zq), 0), dtype=np.int64)
    for lst in np.unique(lists):
        members = np.flatnonzero(lists == lst)
        d, pos = adc_search(model.residual.distance_tables(Zq - model.coarse[lst]), codes[members], k)
        all_d = np.concatenate([best_d, d], axis=1)
        all_i = np.concatenate([best_i, members[pos]], axis=1)
        order = np.argsort(all_d, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(all_d, order, 1), np.take_along_axis(all_i, order, 1)
    return best_d, best_i
