"""Codebook health of a faiss index built elsewhere: :func:`inspect_faiss` (``pqx inspect``).

A team with a production ``IndexPQ`` or ``IndexIVFPQ`` asks the question the training views
answer for our own quantizers: are the codewords used, or has a subspace collapsed? Given the
index and vectors X (its base, or a sample of it), this encodes X with the index's own product
quantizer, ``batch_size`` rows at a time, counts each subspace's codeword usage
(:func:`~explorer.diagnostics.usage_histogram`) and judges it with the training report's collapse
rule (:func:`~explorer.diagnostics.detect_collapse`), under the report's key names.

Supported (after :func:`faiss.downcast_index`): ``IndexPQ``; ``IndexIVFPQ``, whose PQ encodes
the residual x − c(x) of each vector to its nearest coarse centroid (``by_residual``, faiss's
default; x itself otherwise); and either behind an ``IndexPreTransform`` (OPQ's rotation, PCA,
normalisation ...), whose transforms are applied first, as the index applies them. Codes are
faiss's own (``ProductQuantizer.compute_codes``, unpacked from its little-endian bit stream for
nbits ≠ 8), so the usage is the index's, not a re-derivation of it.
"""
from __future__ import annotations

import time

import numpy as np

from . import diagnostics
from .data import row_batches
from .errors import InvalidParameter, InvalidType
from .events import FitFinished, FitStarted, TrainingRun
from .validation import check_int, check_vectors, errors_name_rows, lazy_vectors

SUPPORTED = ("IndexPQ", "IndexIVFPQ", "IndexPreTransform of either")
INSPECT_BATCH = 65536
"""Rows encoded per batch (16 MB of float32 at d = 64)."""


def _parts(index):
    """(transforms, ivf or None, pq, inner index) of a supported index; InvalidParameter otherwise."""
    import faiss
    if not isinstance(index, faiss.Index):
        raise InvalidType(f"index has type {type(index).__name__}; pass a faiss index ({', '.join(SUPPORTED)}), "
                          "e.g. faiss.read_index(path)")
    index = faiss.downcast_index(index)
    transforms = []
    if isinstance(index, faiss.IndexPreTransform):
        transforms = [faiss.downcast_VectorTransform(index.chain.at(i)) for i in range(index.chain.size())]
        index = faiss.downcast_index(index.index)
    if isinstance(index, faiss.IndexIVFPQ):
        return transforms, index, index.pq, index
    if isinstance(index, faiss.IndexPQ):
        return transforms, None, index.pq, index
    raise InvalidParameter(f"index type {type(index).__name__} is not supported; inspect_faiss reads "
                           f"{', '.join(SUPPORTED)} (an index holding a product quantizer)")


def unpack_codes(packed: np.ndarray, n_subspaces: int, nbits: int) -> np.ndarray:
    """(n, M) int64 codeword ids from faiss's packed PQ codes (n, code_size) uint8: code m is bits
    [m·nbits, (m+1)·nbits) of each row's little-endian bit stream (faiss ``PQEncoderGeneric``)."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    if nbits == 8:
        return packed[:, :n_subspaces].astype(np.int64)
    bits = np.unpackbits(packed, axis=1, bitorder="little")[:, :n_subspaces * nbits]
    return (bits.reshape(len(packed), n_subspaces, nbits).astype(np.int64) << np.arange(nbits)).sum(axis=2)


def inspect_faiss(index, X, *, batch_size: int = INSPECT_BATCH, callbacks=()) -> dict:
    """Codebook health of a trained faiss PQ index on vectors X (n, d), as a JSON-ready dict.

    Keys, named as in the ``pqx train`` report: ``index_type`` (e.g. "IndexPreTransform(OPQMatrix)
    > IndexIVFPQ"), ``n_base`` (n), ``dim`` (d), ``subspaces`` (M), ``codewords`` (K = 2^nbits),
    ``bits`` (M·nbits), ``n_lists`` (IVF lists, else None), ``distortion`` (mean ||r − r̂||² of
    what the PQ encodes, r the transformed vector or its IVF residual: the PQ's own error, in its
    space), ``usage`` (M, K) counts, ``perplexity`` (M,), ``dead_codes`` (M,), ``collapsed`` (M,)
    bool and ``verdicts`` (one :class:`~explorer.diagnostics.SubspaceVerdict` dict per subspace,
    with its reason). X may be a memory map, read ``batch_size`` rows at a time; what is held is
    the (M, K) counts.

    ``callbacks`` receive the standard events of :mod:`explorer.events`, so any view of a training
    run can show the index: one ``FitStarted`` (method "faiss", params {"index_type": ...}), one
    ``Step`` (step 1, loss ``{"total": distortion}``, the usage) and one ``FitFinished``.
    Raises :class:`InvalidParameter` for an unsupported or untrained index or vectors of another
    dimension, :class:`InvalidType` for something that is not a faiss index.
    """
    import faiss
    transforms, ivf, pq, inner = _parts(index)
    if not index.is_trained:
        raise InvalidParameter("index is not trained; train it (index.train(X)) or read a trained index file")
    X = lazy_vectors(X, "X")
    if X.shape[1] != index.d:
        raise InvalidParameter(f"X has dimension {X.shape[1]} but the index takes d={index.d}; pass vectors of the index's dimension")
    batch_size = check_int(batch_size, "batch_size", low=1)
    M, nbits = int(pq.M), int(pq.nbits)
    K = 1 << nbits
    kind = type(faiss.downcast_index(inner)).__name__
    if transforms:
        kind = f"IndexPreTransform({', '.join(type(t).__name__ for t in transforms)}) > {kind}"
    run = TrainingRun(callbacks)
    if run.observed:
        run.emit(FitStarted(method="faiss", params={"index_type": kind}, n_samples=len(X), dim=int(X.shape[1]),
                            n_subspaces=M, n_codewords=K))
    t0 = time.perf_counter()
    usage = np.zeros((M, K), dtype=np.int64)
    total = 0.0
    for rows, batch in row_batches(X, batch_size):
        with errors_name_rows(rows.start, rows.stop, len(X)):
            x = check_vectors(batch, "X")
        for t in transforms:
            x = np.ascontiguousarray(t.apply(x), dtype=np.float32)
        if ivf is not None and ivf.by_residual:
            _, lists = ivf.quantizer.search(x, 1)
            x = x - faiss.downcast_index(ivf.quantizer).reconstruct_batch(lists.ravel())
        packed = pq.compute_codes(np.ascontiguousarray(x, dtype=np.float32))
        usage += diagnostics.usage_histogram(unpack_codes(packed, M, nbits), K)
        total += float(((x.astype(np.float64) - pq.decode(packed)) ** 2).sum())
    verdicts = diagnostics.detect_collapse(usage)
    out = {"index_type": kind, "n_base": int(len(X)), "dim": int(X.shape[1]), "subspaces": M, "codewords": K,
           "bits": M * nbits, "n_lists": None if ivf is None else int(ivf.nlist), "distortion": total / len(X),
           "usage": usage.tolist(), "perplexity": diagnostics.perplexity(usage).tolist(),
           "dead_codes": diagnostics.dead_codes(usage).tolist(), "collapsed": [v.collapsed for v in verdicts],
           "verdicts": [v.to_dict() for v in verdicts]}
    if run.observed:
        run.step(1, {"total": out["distortion"]}, n_codewords=K, usage=usage)
        run.emit(FitFinished(steps=1, stopped=False, seconds=time.perf_counter() - t0,
                             metrics={"distortion": out["distortion"]}))
    return out
