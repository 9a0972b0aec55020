"""``pqx export``: train a quantizer on a sample of a vector file and write a faiss index holding the whole base.

    pqx export --method opq --data base.fvecs -M 16 -K 256 --ivf 4096 --index base.faissindex

The base is read in batches from its memory map (see :mod:`explorer.export`), so it may be larger
than memory; the index file appears only once complete (temporary file, then rename). ``--index``
and ``--ivf`` are checked before any training. SIGINT, SIGTERM or SIGHUP ends training at its
next step (or adding at its next batch) and writes no index, with exit code 128 + the signal
number; a signal while the finished index is written lets the write complete.
"""
from __future__ import annotations

import sys
import time

from .. import data
from ..data import training_sample
from ..export import add_in_batches, empty_index, train_index_model, write_index_atomic
from ..validation import check_output_path
from ._common import StopOnSignals, add_method_arguments, fall_back_device, method_params, run_until_aborted

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
    return run_until_aborted(_run, args, "pqx export", "no index written")


def _run(args) -> int:
    check_output_path(args.index, "--index")
    params = fall_back_device(method_params(args), "pqx export")
    base = data.load(args.data).base
    with StopOnSignals(prog="pqx export") as signals:
        # a signal ends training at its next step, or adding at its next batch; an index of a
        # model trained part-way, or of part of the base, is not what was asked: none is written
        t0 = time.perf_counter()
        model = train_index_model(args.method, params, training_sample(base, args.train_size, args.seed), args.ivf,
                                  stop=signals.stop)
        train_s = time.perf_counter() - t0

        def progress(done, total):
            if signals.received:
                raise _Stopped
            if not args.quiet:
                sys.stderr.write(f"\radding {done}/{total} vectors")
                sys.stderr.flush()

        if signals.received:
            return _interrupted(signals, "training")
        t0 = time.perf_counter()
        index = empty_index(model)
        try:
            add_in_batches(index, base, args.add_batch, progress)
        except _Stopped:
            return _interrupted(signals, "adding the base")
        if not args.quiet:
            sys.stderr.write("\n")
        signals.phase = "writing the index"
        write_index_atomic(index, args.index)
    kind = type(index).__name__ if model.coarse is None else f"IVF{len(model.coarse)}-PQ"
    print(f"wrote {args.index}: {kind} of {index.ntotal} vectors, {model.quantizer.bits} bits each "
          f"(train {train_s:.2f}s, add {time.perf_counter() - t0:.2f}s)")
    return signals.exit_code


def _interrupted(signals: StopOnSignals, during: str) -> int:
    sys.stderr.write(f"\npqx export: interrupted by {signals.name} while {during}; no index written\n")
    return signals.exit_code


class _Stopped(Exception):
    """A stop signal was received: leave the export without writing the index."""
