"""``pqx search``: the k nearest coded vectors of each query under a saved model.

    pqx search --model model.pqx --codes codes.npy --queries queries.fvecs -k 100 --out ids.npy

The ranking is the one ``pqx train``'s evaluation uses (:meth:`Quantizer.search_blocks`: ADC
for PQ-style methods, each method's own search otherwise; equal distances ranked by id), run
``--block`` queries at a time over the memory-mapped codes. Writes ``ids`` (nq, k) int64,
nearest first (k is capped at the number of codes), and with ``--distances`` the matching
(nq, k) float32 distances (squared L2; inner products for ``metric="ip"``/``"cosine"``). Files
appear only when complete.
"""
from __future__ import annotations

import numpy as np

from .. import data
from ..atomic import atomic_path
from ..errors import DataFileError, InvalidParameter
from ..persist import load_model
from ..validation import check_output_path
from ._common import progress

HELP = "search queries against codes (pqx encode) with a saved model; write the top-k ids"


def add_arguments(p):
    p.add_argument("--model", required=True, metavar="MODEL.pqx", help="the model the codes were made with")
    p.add_argument("--codes", required=True, metavar="CODES.npy", help="codes written by pqx encode, (n, M)")
    p.add_argument("--queries", required=True, metavar="PATH",
                   help="query vectors: .fvecs .bvecs .npy IDX, or .npz/.hdf5 (their queries, else their base)")
    p.add_argument("-k", type=int, default=100, metavar="K", help="neighbours per query (default 100)")
    p.add_argument("--out", required=True, metavar="IDS.npy", help="where to write the ids, (nq, k) int64")
    p.add_argument("--distances", default=None, metavar="DIST.npy", help="also write the distances, (nq, k) float32")
    p.add_argument("--block", type=int, default=256, metavar="N", help="queries searched per block (default 256)")
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="where a torch model runs: cpu (default), cuda, mps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def read_codes(path, quantizer) -> np.ndarray:
    """The (n, M) integer codes in the ``.npy`` at ``path`` (memory-mapped), checked against ``quantizer``:
    errors name ``--codes``, the file, what is wrong and the fix."""
    codes = data.read_npy(path)
    M, K = quantizer.n_subspaces, quantizer.n_codewords
    if codes.ndim != 2 or codes.shape[1] != M:
        raise DataFileError(f"--codes {path}: codes have shape {codes.shape} but the model has M={M} subspaces, "
                            f"so codes must be (n, {M}); encode with the same model (pqx encode --model)")
    if not np.issubdtype(codes.dtype, np.integer):
        raise DataFileError(f"--codes {path}: codes have dtype {codes.dtype}; they must be integers (pqx encode writes them)")
    if len(codes) == 0:
        raise DataFileError(f"--codes {path}: holds no codes; encode at least one vector")
    if int(codes.min()) < 0 or int(codes.max()) >= K:  # reductions read the memory map, copy nothing
        raise DataFileError(f"--codes {path}: codes hold values outside [0, {K - 1}] (K={K}); "
                            "were they made by another model?")
    return codes


def run(args) -> int:
    outs = [check_output_path(args.out, "--out", ".npy")]
    if args.distances:
        outs.append(check_output_path(args.distances, "--distances", ".npy"))
    if args.k < 1 or args.block < 1:
        raise InvalidParameter(f"-k {args.k} and --block {args.block}: both must be ≥ 1")
    quantizer = load_model(args.model, device=args.device)
    codes = read_codes(args.codes, quantizer)
    ds = data.load(args.queries)
    queries = ds.queries if ds.queries is not None else ds.base
    if queries.shape[1] != quantizer.dim_:
        raise InvalidParameter(f"--queries {args.queries}: vectors have d={queries.shape[1]} but the model "
                               f"{args.model} was trained on d={quantizer.dim_}")
    queries = np.asarray(queries, dtype=np.float32)
    k = min(args.k, len(codes))
    ids = np.empty((len(queries), k), dtype=np.int64)
    dist = np.empty((len(queries), k), dtype=np.float32)
    done = 0
    with progress(len(queries), "query", quiet=args.quiet, desc="search") as bar:
        for d, i in quantizer.search_blocks(queries, codes, k, block=args.block):
            ids[done:done + len(i)], dist[done:done + len(i)] = i, d
            done += len(i)
            bar.update(len(i))
    for out, array in zip(outs, (ids, dist)):
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.save(fh, array)
    print(f"wrote {args.out}: top-{k} ids of {len(queries)} queries among {len(codes)} codes"
          + (f", distances in {args.distances}" if args.distances else ""))
    return 0
