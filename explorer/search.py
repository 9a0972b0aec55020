"""Search: asymmetric (ADC) and symmetric (SDC) distance search over codes, exact ground truth,
faiss reference quantizers, and export of our quantizers to faiss indexes.

ADC: the distance from query q to a coded vector with codes (c_1..c_M) is Σ_m T[q, m, c_m],
where T (nq, M, K) holds squared distances from q's sub-vectors to every codeword.
"""
from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import torch

from . import metrics
from .errors import InvalidParameter
from .validation import check_codes, check_int, check_metric, check_vectors, errors_name_rows, lazy_vectors

_BLOCK = 1 << 24  # bound on the (nq, block, M) gather: 64 MB of float32


def merge_topk(best_d, best_i, d, ids, k):
    """Running k smallest: merge block distances ``d`` (nq, b) with ids ``ids`` (b,) — or (nq, b),
    one row of ids per query — into the best so far (``best_d``, ``best_i``: (nq, ≤k) tensors, or
    None for the first block); return the new best, nearest first.

    Equal distances keep the order in which they arrive: the best so far first, then the block in
    its own order, and of several items tied at the k-th distance the first to arrive are kept.
    The scans here pass blocks of ascending ids, so the result is the first k of the order by
    (distance, id), whatever the block sizes: a full ranking (k at least the number of
    candidates, as mAP@all asks) is a stable sort, and a top-k is its first k items (faiss's
    heaps keep the smaller id on ties too).
    """
    ids = ids if ids.dim() == 2 else ids[None, :].expand(len(d), -1)
    if best_d is not None:
        d = torch.cat([best_d, d], dim=1)
        ids = torch.cat([best_i, ids], dim=1)
    if k >= d.shape[1]:
        vals, pos = torch.sort(d, dim=1, stable=True)
    else:
        # The k + 1 smallest (unordered), sorted: where the (k+1)-th equals the k-th, top-k would
        # split a tie, and those rows keep their first-arrived tied items instead.
        _, pos = torch.topk(d, k=k + 1, dim=1, largest=False, sorted=False)
        near, order = torch.sort(torch.gather(d, 1, pos), dim=1)
        pos = torch.gather(pos, 1, order[:, :k])
        split = (near[:, k] == near[:, k - 1]).nonzero()[:, 0]
        if len(split):
            ds, kth = d[split], near[split, k - 1:k]
            below, tied = ds < kth, ds == kth
            keep = below | (tied & (torch.cumsum(tied, dim=1) <= k - below.sum(dim=1, keepdim=True)))
            pos[split] = keep.nonzero()[:, 1].reshape(len(split), k)
        pos = torch.sort(pos, dim=1).values                                 # arrival order
        vals, order = torch.sort(torch.gather(d, 1, pos), dim=1, stable=True)
        pos = torch.gather(pos, 1, order)
    return vals, torch.gather(ids, 1, pos)


_SCAN_CODES = 1 << 22  # codes per faiss scan call (64 MB of a memory-mapped base at M = 16)
_SDC_QUERIES = 256      # queries per faiss scan call: one query per row of its (M, 256, 256) table


def adc_search(tables: np.ndarray, codes: np.ndarray, k: int, *, device=None) -> tuple[np.ndarray, np.ndarray]:
    """k nearest coded vectors by table look-up.

    tables: (nq, M, K) float32 distance tables; codes: (n, M) integer; device: where to scan
    (None or "cpu": this machine; a CUDA device: torch there).
    Returns (distances (nq, k) float32, ids (nq, k) int64), nearest first; k is capped at n.

    The distance of code (c_1..c_M) is Σ_m T[q, m, c_m] summed in float32 in subspace order
    (((T[q,1,c_1] + T[q,2,c_2]) + ...) + T[q,M,c_M]), as faiss's scanners sum, and items are
    ranked by (distance, id) (:func:`merge_topk`): the top-k is the first k of the full ranking.
    Every path below gives these same distances and ids, bit for bit:

    - on the CPU with K ≤ 256, faiss's table scan: the tables of up to 256 queries are loaded as
      the symmetric table of a faiss ``ProductQuantizer`` (row j of subspace m holds query j's
      T[j, m, :]) and ``search_sdc`` scans the codes with query j given the code j in every
      subspace, a heap per query keeping the smaller id on ties; blocks of
      :data:`_SCAN_CODES` codes are merged by :func:`merge_topk`.
    - otherwise (K > 256, a CUDA device), torch: codes in blocks, distances added subspace by
      subspace, each block merged by :func:`merge_topk`.

    Memory is O(nq · block) besides the result whatever n is: a memory-mapped base is read a
    block at a time.
    """
    tables = np.ascontiguousarray(tables, dtype=np.float32)
    nq, M, K = tables.shape
    codes = check_codes(codes, M, K, as_int64=False)  # uint8 codes of a huge base: converted per block below
    k = check_int(k, "k", low=1)
    if len(codes) == 0:
        raise InvalidParameter("codes has no rows: there is nothing to search; encode a base first")
    dev = torch.device("cpu" if device is None else device)
    if dev.type == "cpu" and K <= 256:
        return _adc_search_faiss(tables, codes, k)
    return _adc_search_torch(tables, codes, k, dev)


def _adc_search_torch(tables: np.ndarray, codes: np.ndarray, k: int, dev: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """:func:`adc_search` in torch on ``dev`` (any K, any device)."""
    nq, M, K = tables.shape
    T = torch.from_numpy(tables).to(dev).permute(1, 0, 2).contiguous()  # (M, nq, K): T[m] is subspace m's table
    block = max(1, _BLOCK // max(1, nq * M))
    best_d = best_i = None
    for start in range(0, len(codes), block):
        c = torch.from_numpy(codes[start:start + block].astype(np.int64)).to(dev)  # (b, M)
        d = T[0].index_select(1, c[:, 0])                                            # (nq, b)
        for m in range(1, M):
            d += T[m].index_select(1, c[:, m])
        ids = torch.arange(start, start + len(c), dtype=torch.int64, device=dev)
        best_d, best_i = merge_topk(best_d, best_i, d, ids, k)
    return best_d.cpu().numpy(), best_i.cpu().numpy()


def _adc_search_faiss(tables: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`adc_search` through faiss's ``ProductQuantizer.search_sdc`` (CPU, K ≤ 256)."""
    import faiss
    nq, M, K = tables.shape
    n = len(codes)
    k = min(k, n)
    pq = faiss.ProductQuantizer(M, M, 8)  # only its M and 256-row symmetric table are used
    sdc = np.zeros((M, 256, 256), dtype=np.float32)
    query_codes = np.repeat(np.arange(_SDC_QUERIES, dtype=np.uint8)[:, None], M, axis=1)  # query j → code j
    out_d = np.empty((nq, k), dtype=np.float32)
    out_i = np.empty((nq, k), dtype=np.int64)
    for qs in range(0, nq, _SDC_QUERIES):
        qb = min(_SDC_QUERIES, nq - qs)
        sdc[:, :qb, :K] = tables[qs:qs + qb].transpose(1, 0, 2)
        faiss.copy_array_to_vector(sdc.ravel(), pq.sdc_table)
        best_d = best_i = None
        for start in range(0, n, _SCAN_CODES):
            block = np.ascontiguousarray(codes[start:start + _SCAN_CODES], dtype=np.uint8)
            kb = min(k, len(block))
            d = np.empty((qb, kb), dtype=np.float32)
            i = np.empty((qb, kb), dtype=np.int64)
            heaps = faiss.float_maxheap_array_t()
            heaps.nh, heaps.k, heaps.val, heaps.ids = qb, kb, faiss.swig_ptr(d), faiss.swig_ptr(i)
            pq.search_sdc(faiss.swig_ptr(query_codes), qb, faiss.swig_ptr(block), len(block), heaps, True)
            if start == 0 and len(block) == n:
                best_d, best_i = d, i
                break
            best_d, best_i = merge_topk(None if best_d is None else torch.from_numpy(best_d),
                                        None if best_i is None else torch.from_numpy(best_i),
                                        torch.from_numpy(d), torch.from_numpy(i + start), k)
            best_d, best_i = best_d.numpy(), best_i.numpy()
        out_d[qs:qs + qb], out_i[qs:qs + qb] = best_d, best_i
    return out_d, out_i


def sdc_search(quantizer, query_codes: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric search: query codes against base codes through codeword-to-codeword tables.

    quantizer: fitted, with ``codebooks_`` (M, K, ds). Returns (distances, ids) as :func:`adc_search`.
    """
    C = torch.from_numpy(np.ascontiguousarray(quantizer.codebooks_, dtype=np.float32))
    pair = torch.cdist(C, C).pow_(2)  # (M, K, K)
    q = torch.from_numpy(check_codes(query_codes, C.shape[0], C.shape[1]))
    tables = pair[torch.arange(C.shape[0])[None, :], q]  # (nq, M, K)
    return adc_search(tables.numpy(), codes, k)


def sdc_search_blocks(quantizer, query_codes: np.ndarray, codes: np.ndarray, k: int, *, block: int | None = None):
    """Yield :func:`sdc_search`'s (distances (b, k), ids (b, k)) for successive blocks of ``block``
    query codes (None: all at once); symmetric tables are gathered, so blocks equal one search."""
    block = len(query_codes) if block is None else check_int(block, "block", low=1)
    for start in range(0, len(query_codes), block):
        yield sdc_search(quantizer, query_codes[start:start + block], codes, k)


_KNN_CHUNK = 1 << 19  # base elements per exact-search chunk: 2 MB of float32


def exact_knn(base, queries: np.ndarray, k: int = 100, *, chunk_rows: int | None = None,
              metric: str = "l2") -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours: (distances (nq, k) float32, ids (nq, k) int64), nearest first;
    k is capped at n. ``metric``: "l2" (squared L2, faiss ``IndexFlatL2``), "ip" (inner
    products, largest first, ``IndexFlatIP``) or "cosine" (``IndexFlatIP`` on L2-normalised
    base and queries: the cosine similarities).

    base (n, d), of any numeric dtype, may be a memory map (or :class:`~explorer.data.RowsExcept`):
    it is read and searched ``chunk_rows`` rows at a time (default: 2 MB of float32, 2^19 / d
    rows), each chunk's k best merged into the running best with :func:`merge_topk` (on negated
    scores for ip and cosine), so memory is one chunk plus (nq, 2k) whatever n is. A base that
    fits in one chunk gives faiss's answer as is.
    """
    import faiss
    metric = check_metric(metric)
    queries = check_vectors(queries, "queries")
    base = lazy_vectors(base, "base")
    n, d = base.shape
    if d != queries.shape[1]:
        raise InvalidParameter(f"queries have d={queries.shape[1]} but base has d={d}; they must match")
    k = min(check_int(k, "k", low=1), n)
    chunk = check_int(chunk_rows, "chunk_rows", low=1) if chunk_rows is not None else max(1, _KNN_CHUNK // d)
    prepare = metrics.l2_normalize if metric == "cosine" else (lambda x: x)
    queries = prepare(queries)
    sign = 1.0 if metric == "l2" else -1.0  # merge_topk keeps the smallest: negate similarities
    best_d = best_i = None
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        index = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
        index.add(prepare(check_vectors(base[start:stop], "base" if stop - start == n else f"base rows {start}–{stop - 1}")))
        dist, ids = index.search(queries, min(k, stop - start))
        if stop - start == n:
            return dist, ids
        best_d, best_i = merge_topk(best_d, best_i, torch.from_numpy(sign * dist), torch.from_numpy(ids + start), k)
    return sign * best_d.numpy(), best_i.numpy()


def faiss_nbits(n_codewords: int) -> int:
    """log2 K, the ``nbits`` faiss takes; K must be a power of two (error names the fix)."""
    nbits = int(np.log2(n_codewords))
    if 2 ** nbits != n_codewords:
        raise InvalidParameter(f"faiss needs K to be a power of two; K={n_codewords}. Refit with K in (16, 256, 4096, ...)")
    return nbits


def faiss_metric(metric: str) -> int:
    """faiss's metric constant for ours: ``METRIC_L2`` for "l2", ``METRIC_INNER_PRODUCT`` for "ip"
    and "cosine" (whose vectors are normalised before they reach the index)."""
    import faiss
    return faiss.METRIC_L2 if check_metric(metric) == "l2" else faiss.METRIC_INNER_PRODUCT


def faiss_pq(d: int, n_subspaces: int, n_codewords: int, codebooks: np.ndarray | None = None, metric: str = "l2"):
    """A faiss ``IndexPQ`` with ``metric`` (:func:`faiss_metric`); with ``codebooks`` (M, K, d/M)
    it is loaded with them and ready to add."""
    import faiss
    index = faiss.IndexPQ(d, n_subspaces, faiss_nbits(n_codewords), faiss_metric(metric))
    if codebooks is not None:
        faiss.copy_array_to_vector(np.ascontiguousarray(codebooks, dtype=np.float32).ravel(), index.pq.centroids)
        index.is_trained = True
    return index


def faiss_rotation(rotation: np.ndarray):
    """A trained faiss ``LinearTransform`` computing y = R x for R (d, d)."""
    import faiss
    d = rotation.shape[0]
    lt = faiss.LinearTransform(d, d, False)
    faiss.copy_array_to_vector(np.ascontiguousarray(rotation, dtype=np.float32).ravel(), lt.A)
    lt.is_trained = True
    return lt


def to_faiss(quantizer):
    """faiss index holding a fitted quantizer's codebooks (and rotation), empty and ready to ``add``.

    PQ → ``IndexPQ``; OPQ (has ``rotation_``) → ``IndexPreTransform(LinearTransform, IndexPQ)``.
    The index encodes with the same nearest-codeword rule, so its codes equal ``encode``'s, and
    its search distances equal our ADC distances. ``metric="ip"`` gives a ``METRIC_INNER_PRODUCT``
    index; ``"cosine"`` one preceded by faiss's ``NormalizationTransform``, so raw vectors go in. For the deep methods the index lives in the
    embedding space: add and search ``quantizer.transform(X)``, not X.
    """
    quantizer._check_fitted()
    import faiss
    M, K, ds = np.asarray(quantizer.codebooks_).shape
    metric = getattr(quantizer, "metric", "l2")
    index = with_rotation(faiss_pq(M * ds, M, K, quantizer.codebooks_, metric), getattr(quantizer, "rotation_", None))
    if metric == "cosine":
        if not isinstance(index, faiss.IndexPreTransform):
            index = faiss.IndexPreTransform(index)
        index.prepend_transform(faiss.NormalizationTransform(M * ds, 2.0))
    return index


def with_rotation(index, rotation: np.ndarray | None):
    """``index`` preceded by y = R x for R (d, d) (an ``IndexPreTransform``), or ``index`` itself when R is None."""
    import faiss
    if rotation is None:
        return index
    # faiss's Python layer keeps references to both parts, so they live as long as the index.
    wrapped = faiss.IndexPreTransform(faiss_rotation(rotation), index)
    wrapped.is_trained = True
    return wrapped


def faiss_reference(kind: str, X: np.ndarray, n_subspaces: int, n_codewords: int, *, seed: int = 1234, n_iter: int = 25):
    """A faiss quantizer index trained on X, for reference rows and parity tests.

    kind: "pq" (IndexPQ), "opq" (OPQMatrix + IndexPQ), "rq" (IndexResidualQuantizer) or
    "lsq" (IndexLocalSearchQuantizer), each with M codebooks of K codewords (M·log2 K bits).
    """
    import faiss
    X = check_vectors(X, "X")
    d = X.shape[1]
    nbits = faiss_nbits(n_codewords)
    if kind == "pq":
        index = faiss.IndexPQ(d, n_subspaces, nbits)
        index.pq.cp.seed = seed
        index.pq.cp.niter = n_iter
        index.pq.cp.min_points_per_centroid = 1  # only silences faiss's small-training-set warning
    elif kind == "opq":
        opq = faiss.OPQMatrix(d, n_subspaces)
        opq.verbose = False  # faiss seeds its OPQ rotation internally; `seed` does not reach it
        # The PQs OPQ trains get min_points_per_centroid = 1, which only silences faiss's
        # small-training-set warning; the index keeps a reference to opq.pq so it stays alive.
        opq.pq = opq_pq = faiss.ProductQuantizer(d, n_subspaces, nbits)
        opq_pq.cp.min_points_per_centroid = 1
        inner = faiss.IndexPQ(d, n_subspaces, nbits)
        inner.pq.cp.min_points_per_centroid = 1
        index = faiss.IndexPreTransform(opq, inner)
        index.referenced_objects.append(opq_pq)
    elif kind == "rq":
        index = faiss.IndexResidualQuantizer(d, n_subspaces, nbits)
        index.rq.cp.min_points_per_centroid = 1  # only silences faiss's small-training-set warning
    elif kind == "lsq":
        index = faiss.IndexLocalSearchQuantizer(d, n_subspaces, nbits)
    else:
        raise InvalidParameter(f"unknown faiss reference {kind!r}; use pq, opq, rq or lsq")
    index.train(X)
    return index


def faiss_codes_distortion(index, X: np.ndarray) -> float:
    """Mean squared reconstruction error of a trained faiss quantizer index on X (n, d), read in
    batches (:func:`evaluate_faiss`)."""
    return evaluate_faiss(index, X)["distortion"]


# Base elements per faiss batch: 2^21 float32 (8 MB; 32,768 rows at d=64, 16,384 at d=128); the
# distortion's float64 temporaries are a few times that, whatever n is. Larger than evaluate's
# 1,024 rows because faiss's LSQ draws its random initial codes per sa_encode call (seeded
# afresh each call), so its codes depend on which rows share a call: with batches this large,
# every base up to that many rows gets the codes one call over all of it gives, as before.
FAISS_BATCH = 1 << 21


def evaluate_faiss(index, base, queries: np.ndarray | None = None, *, k: int = 100,
                   query_labels: np.ndarray | None = None, base_labels: np.ndarray | None = None,
                   batch_size: int | None = None, map_block: int | None = None) -> dict:
    """Encode ``base`` with a trained faiss quantizer index, add it to the index, search ``queries``, and measure.

    Returns {"codes": (n, sa_code_size) uint8 faiss codes of the base, "distortion": mean
    ||x − x̂||² (float64 sums of float32 x and faiss's ``sa_decode`` x̂), "encode_seconds": time
    in ``sa_encode``, "ranking": (nq, min(k, n)) int64 ids nearest first (None without queries),
    "map": mAP@all over the whole base with ``query_labels`` and ``base_labels``, else None}.
    Without queries nothing is added or searched.

    Bounded memory: ``base`` (n, d) of any numeric dtype, possibly a memory map or
    :class:`~explorer.data.RowsExcept`, is read ``batch_size`` rows at a time (default
    :data:`FAISS_BATCH` elements: 2^21 / d rows), each batch converted to float32, checked, encoded
    once, decoded for the distortion and its codes added to the index (``add_sa_codes``: no
    second encode, which for LSQ costs as much as the first; an ``IndexPreTransform`` such as
    OPQ has no ``add_sa_codes`` and re-encodes the batch with ``add``, which gives the same codes).
    What is held is the codes, twice (here and in the index; n · code_size bytes each). mAP@all
    ranks the whole base per query, so it is searched ``map_block`` queries at a time (default
    :func:`~explorer.metrics.queries_per_block`: ~10^6 ids per block) and each block's ranking
    scored and dropped (:func:`~explorer.metrics.map_in_blocks`); the first ``k`` ids are kept.

    Equal to one faiss call over the whole base, the distortion up to float64 summation order
    (relative ~10^-15): the codes for PQ, OPQ and RQ, whose code of a vector depends on that
    vector alone (checked on digits in batches of 1 to 1,024 rows); LSQ's codes only while
    n ≤ ``batch_size`` (see :data:`FAISS_BATCH`; in smaller batches a few percent of its codes
    change, to other local-search optima: batches of 1 to 1,024 rows moved its distortion by
    −1.1% to +2.0% and recall@1 by up to 0.045 on digits at 16 bits and synthetic 3,000 × 32 at
    32 bits, the spread of its random initial codes). The ranking equals one search of all
    queries while they fit one block (nq · n ≤ 2^20 with the default), and in any blocks for RQ
    and LSQ (each query's distances computed on their own). faiss's PQ computes the distance
    tables of a call's queries in one BLAS product when d/M ≥ 16, whose last float32 bits depend
    on how many queries it holds, so in blocks near-tied items may swap: on digits (M=2, K=256,
    200 queries in blocks of 7) one query's first 100 ids changed order, mAP moved by 10^-8 and
    recall not at all.
    """
    import faiss
    base = lazy_vectors(base, "base")
    n, d = base.shape
    batch = max(1, FAISS_BATCH // d) if batch_size is None else check_int(batch_size, "batch_size", low=1)
    add = queries is not None
    # add_sa_codes stores the codes as they are; IndexPreTransform (OPQ) does not implement it
    add_codes = add and not isinstance(index, faiss.IndexPreTransform)
    codes = np.empty((n, index.sa_code_size()), dtype=np.uint8)
    encode_seconds, total = 0.0, 0.0
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        with errors_name_rows(start, stop, n):
            x = check_vectors(base[start:stop], "base")
        t0 = time.perf_counter()
        codes[start:stop] = batch_codes = index.sa_encode(x)
        encode_seconds += time.perf_counter() - t0
        total += float(((x.astype(np.float64) - index.sa_decode(batch_codes)) ** 2).sum())
        if add_codes:
            index.add_sa_codes(batch_codes)
        elif add:
            index.add(x)
    out = {"codes": codes, "distortion": total / n, "encode_seconds": encode_seconds, "ranking": None, "map": None}
    if not add:
        return out
    queries = check_vectors(queries, "queries")
    k = check_int(k, "k", low=1)
    if query_labels is not None and base_labels is not None:
        block = metrics.queries_per_block(n) if map_block is None else check_int(map_block, "map_block", low=1)
        rankings = (index.search(queries[s:s + block], n)[1] for s in range(0, len(queries), block))
        (out["map"],), out["ranking"] = metrics.map_in_blocks(rankings, query_labels, base_labels, keep=k)
    else:
        out["ranking"] = index.search(queries, min(k, n))[1]
    return out


def encode_batched(quantizer, X, batch: int = 1024) -> np.ndarray:
    """Codes (n, M) of a fitted quantizer for vectors X (n, d) of any numeric dtype, in batches.

    Made for memory-mapped files (``.bvecs`` uint8, ``.fvecs``): only ``batch`` rows at a time are
    converted to float32 and encoded, so the memory this allocates is the output codes (n·M
    bytes for K ≤ 256) plus one batch's work buffers, whatever n is. The result equals
    ``quantizer.encode(X)``. Default batch: 1,024 rows (0.5 MB of float32 at d=128): a batch's
    temporaries (float copy, sub-space split, distance buffers of a few MB) then stay below the
    codes themselves for n in the millions, at the same speed as larger batches.
    """
    from .validation import code_dtype
    quantizer._check_fitted()
    batch = check_int(batch, "batch", low=1)
    if getattr(X, "ndim", 2) != 2:
        raise InvalidParameter(f"X must be 2-D (n, d); got shape {np.shape(X)}")
    n = len(X)
    out = np.empty((n, quantizer.n_subspaces), dtype=code_dtype(quantizer.n_codewords))
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        with errors_name_rows(start, stop, n):
            out[start:stop] = quantizer.encode(np.asarray(X[start:stop], dtype=np.float32))
    return out


@contextlib.contextmanager
def native_stderr_silenced():
    """Silence C-level stderr (file descriptor 2) inside the block.

    faiss's k-means prints "WARNING clustering n points to K centroids" from C++ on every call
    with fewer than 39·K training points (digits at K=256), unconditionally; in a sweep or a
    notebook that is hundreds of identical lines. Descriptor 2 is the C library's stderr whatever
    Python's ``sys.stderr`` is (ipykernel and pytest replace that one). Python exceptions pass.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 at all: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
