"""Evaluate a fitted quantizer on a dataset and build the JSON report of ``pqx train``.

The report's top-level keys are a stable contract (methods may add keys, never remove):
method, params (the method's hyper-parameters as given, so a report says what was run), dataset,
n_base, n_queries, dim, subspaces, codewords, bits, distortion, recall_at, map, usage, perplexity,
dead_codes, collapsed, history, fit_seconds, encode_seconds.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from . import diagnostics, metrics
from .atomic import atomic_open
from .jsonsafe import json_ready  # noqa: F401  (the one strict-JSON conversion, re-exported)
from .data import Dataset, ground_truth, row_batches
from .search import encode_batched
from .validation import lazy_vectors

RECALL_AT = (1, 10, 100)
# Rows read per evaluation batch, encode_batched's default: 0.5 MB of float32 at d=128; the
# distortion's float64 temporaries are a few times that, still far below the codes for large n.
EVAL_BATCH = 1024


def evaluate(quantizer, ds: Dataset, gt: np.ndarray | None = None, *, batch_size: int = EVAL_BATCH,
             map_block: int | None = None) -> dict:
    """Encode the base, search the queries, and measure.

    Returns distortion (mean ||z − ẑ||² in the codebooks' space), recall_at {"1","10","100"}
    (1-recall@R against ``gt``, else the dataset's given ``neighbors``, else exact neighbours in
    the input space by the quantizer's ``metric``, L2 unless it has another), map (mAP@all over the whole
    base, with labels; else None), usage (M, K), perplexity (M), dead_codes (M), collapsed (M),
    and encode_seconds; also ``codes`` (n, M) for callers that need them.

    Bounded memory: the base (possibly a memory map or :class:`~explorer.data.RowsExcept`) is
    read ``batch_size`` rows at a time to encode it (:func:`~explorer.search.encode_batched`)
    and to sum the distortion, and in chunks for the exact ground truth
    (:func:`~explorer.search.exact_knn`); what is held is the codes (n·M bytes for K ≤ 256) and
    ADC search runs over them. mAP@all ranks the whole base per query: ``map_block`` queries at
    a time (default: :func:`~explorer.metrics.queries_per_block`, ~10^6 ids per block), each
    block's (block, n) ranking (:meth:`~explorer.methods.base.Quantizer.search_blocks`) scored
    and dropped (:func:`~explorer.metrics.map_in_blocks`). Ties: base vectors at equal ADC
    distance (duplicate codes) are ranked by id (:func:`~explorer.search.merge_topk`), so the
    blocked ranking, and mAP@all, equal one search of all queries exactly, however many codes a
    scan block holds.
    """
    base = lazy_vectors(ds.base, "base")
    t0 = time.perf_counter()
    codes = encode_batched(quantizer, base, batch_size)
    encode_seconds = time.perf_counter() - t0
    out: dict = {"distortion": distortion_batched(quantizer, base, codes, batch_size), "encode_seconds": encode_seconds}
    if ds.queries is not None:
        if gt is None:  # a file's own ground truth (ann-benchmarks neighbors) is used as given
            gt = ds.neighbors if ds.neighbors is not None else ground_truth(ds, max(RECALL_AT), metric=getattr(quantizer, "metric", "l2"))
        if ds.labels is not None and ds.query_labels is not None:
            # mAP@all ranks the whole base for each query: a block of queries at a time, so the
            # ranking held is (block, n); recall reads the first ids of the same rankings
            block = metrics.queries_per_block(len(base)) if map_block is None else map_block
            rankings = (ids for _, ids in quantizer.search_blocks(ds.queries, codes, len(base), block=block))
            (out["map"],), ranking = metrics.map_in_blocks(rankings, ds.query_labels, ds.labels, keep=max(RECALL_AT))
        else:
            _, ranking = quantizer.search(ds.queries, codes, max(RECALL_AT))
            out["map"] = None
        out["recall_at"] = metrics.recalls(ranking, gt, RECALL_AT)
    else:
        out["recall_at"] = {str(r): None for r in RECALL_AT}
        out["map"] = None
    usage = diagnostics.usage_histogram(codes, quantizer.n_codewords)
    usable = quantizer.usable_codewords(ds.labels)
    out["usage"] = usage
    out["perplexity"] = diagnostics.perplexity(usage)
    out["dead_codes"] = diagnostics.dead_codes(usage)
    out["collapsed"] = diagnostics.collapsed_mask(
        usage, n_distinct=None if usable is None else np.full(len(usage), usable))
    out["codes"] = codes
    return out


def distortion_batched(quantizer, base, codes, batch_size: int = EVAL_BATCH) -> float:
    """Mean ||transform(x) − reconstruct(code)||² over ``base`` (n, d), summed ``batch_size`` rows at a time.

    ``codes``: the (n, M) codes of the base, or a function of a float32 batch (b, d) returning its
    codes (RLQ's policy codes), so that no (n, ·) array but the codes is ever held.
    """
    total = 0.0
    for rows, batch in row_batches(base, batch_size):
        batch_codes = codes(batch) if callable(codes) else codes[rows]
        total += quantizer.embedding_distortion(batch, batch_codes) * len(batch)
    return total / len(base)


def build_report(quantizer, ds: Dataset, history: list[dict], evaluation: dict | None = None) -> dict:
    """The ``pqx train --json`` report as a JSON-ready dict (see the module docstring)."""
    ev = evaluate(quantizer, ds) if evaluation is None else evaluation
    report = {
        "method": quantizer.name,
        "params": json.loads(json.dumps(quantizer.get_params(), default=str)),
        "dataset": ds.name,
        "n_base": ds.n,
        "n_queries": 0 if ds.queries is None else int(len(ds.queries)),
        "dim": ds.dim,
        "subspaces": int(quantizer.n_subspaces),
        "codewords": int(quantizer.n_codewords),
        "bits": int(quantizer.bits),
        "distortion": float(ev["distortion"]),
        "recall_at": ev["recall_at"],
        "map": ev["map"],
        "usage": np.asarray(ev["usage"]).tolist(),
        "perplexity": np.asarray(ev["perplexity"]).tolist(),
        "dead_codes": np.asarray(ev["dead_codes"]).tolist(),
        "collapsed": np.asarray(ev["collapsed"]).tolist(),
        "history": history,
        "fit_seconds": float(getattr(quantizer, "fit_seconds_", 0.0)),
        "encode_seconds": float(ev["encode_seconds"]),
    }
    report.update(quantizer.extra_report(ds, ev))
    return report




def write_json_atomic(path: str | os.PathLike, payload) -> None:
    """Write ``payload`` as strict JSON (:func:`json_ready`: NaN/inf as null) to ``path`` through
    :func:`~explorer.atomic.atomic_open` (exclusive temporary file, fsync, rename), so no partial
    or non-standard file is ever left. The one JSON writer of every report."""
    text = json.dumps(json_ready(payload), indent=1, allow_nan=False)
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
