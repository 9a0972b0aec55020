"""``pqx export``: train a quantizer on a sample of a vector file and write a faiss index holding the whole base.

    pqx export --method opq --data base.fvecs -M 16 -K 256 --ivf 4096 --index base.faissindex

The base is read in batches from its memory map (see :mod:`explorer.export`), so it may be larger
than memory; the index file appears only once complete (temporary file, then rename).
"""
from __future__ import annotations

import sys
import time

from .. import data
from ..data import training_sample
from ..export import add_in_batches, empty_index, train_index_model, write_index_atomic
from ._common import add_method_arguments, fall_back_device, method_params

HELP = "train on a sample and write a faiss index (IndexPQ, OPQ pre-transform or IVF-PQ) holding the whole base"


def add_arguments(p):
    add_method_arguments(p)
    p.add_argument("--data", default="digits", help="digits, synthetic, or a vector file (.fvecs .bvecs .npy IDX)")
    p.add_argument("--seed", type=int, default=0, help="random_state for the training sample and training (default 0)")
    p.add_argument("--index", required=True, metavar="OUT.faissindex", help="where to write the faiss index")
    p.add_argument("--ivf", type=int, default=None, metavar="NLIST", help="build IVF-PQ with NLIST coarse lists")
    p.add_argument("--train-size", type=int, default=100_000, metavar="N",
                   help="train on a seeded sample of N base vectors (default 100000)")
    p.add_argument("--add-batch", type=int, default=65536, metavar="N", help="vectors read and added per batch (default 65536)")
    p.add_argument("--quiet", action="store_true", help="no progress line")


def run(args) -> int:
    params = fall_back_device(method_params(args), "pqx export")
    base = data.load(args.data).base
    t0 = time.perf_counter()
    model = train_index_model(args.method, params, training_sample(base, args.train_size, args.seed), args.ivf)
    index = empty_index(model)
    train_s = time.perf_counter() - t0

    def progress(done, total):
        if not args.quiet:
            sys.stderr.write(f"\radding {done}/{total} vectors")
            sys.stderr.flush()

    t0 = time.perf_counter()
    add_in_batches(index, base, args.add_batch, progress)
    if not args.quiet:
        sys.stderr.write("\n")
    write_index_atomic(index, args.index)
    kind = type(index).__name__ if model.coarse is None else f"IVF{len(model.coarse)}-PQ"
    print(f"wrote {args.index}: {kind} of {index.ntotal} vectors, {model.quantizer.bits} bits each "
          f"(train {train_s:.2f}s, add {time.perf_counter() - t0:.2f}s)")
    return 0
