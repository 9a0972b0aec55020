"""``pqx encode``: the codes of a vector file under a saved model.

    pqx encode --model model.pqx --data base.fvecs --out codes.npy

The file is memory-mapped (``.fvecs``/``.bvecs``/``.npy``; ``.npz`` and ``.hdf5`` are read into
memory) and encoded ``--batch-size`` rows at a time into a memory-mapped ``.npy`` that appears,
complete, only at the end (temporary file, then rename): what is held is one batch, whatever n
is. Codes are (n, M) uint8 for K ≤ 256, else uint16, row i the code of vector i.
"""
from __future__ import annotations

import numpy as np

from .. import data
from ..atomic import atomic_path
from ..errors import InvalidParameter
from ..persist import load_model
from ..validation import code_dtype
from ..validation import check_output_path
from ._common import progress

HELP = "encode a vector file with a saved model (pqx train --save) into an .npy of codes"


def add_arguments(p):
    p.add_argument("--model", required=True, metavar="MODEL.pqx", help="a model saved by pqx train --save or quantizer.save")
    p.add_argument("--data", required=True, metavar="PATH",
                   help="vectors to encode: .fvecs .bvecs .npy IDX (memory-mapped), .npz or .hdf5 (their base)")
    p.add_argument("--base-key", default=None, metavar="NAME", help="the .npz array to encode (default: its base)")
    p.add_argument("--out", required=True, metavar="CODES.npy", help="where to write the codes, (n, M) uint8/uint16")
    p.add_argument("--batch-size", type=int, default=65536, metavar="N", help="vectors encoded per batch (default 65536)")
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="where a torch model runs: cpu (default), cuda, mps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    out = check_output_path(args.out, "--out", ".npy")
    if args.batch_size < 1:
        raise InvalidParameter(f"--batch-size {args.batch_size}: must be ≥ 1")
    quantizer = load_model(args.model, device=args.device)
    base = data.load(args.data, base_key=args.base_key).base
    if base.shape[1] != quantizer.dim_:
        raise InvalidParameter(f"--data {args.data}: vectors have d={base.shape[1]} but the model {args.model} "
                               f"was trained on d={quantizer.dim_}; encode vectors of the training dimension")
    n = len(base)
    with atomic_path(out) as tmp:  # open_memmap writes the .npy format whatever the file's name
        codes = np.lib.format.open_memmap(tmp, mode="w+", dtype=code_dtype(quantizer.n_codewords),
                                          shape=(n, quantizer.n_subspaces))
        with progress(n, "vec", quiet=args.quiet, desc="encode") as bar:
            for rows, batch in data.row_batches(base, args.batch_size):
                codes[rows] = quantizer.encode(batch)
                bar.update(len(batch))
        codes.flush()
        del codes
    print(f"wrote {out}: codes of {n} vectors, {quantizer.n_subspaces} × {code_dtype(quantizer.n_codewords)} each "
          f"({quantizer.name}, {quantizer.bits} bits)")
    return 0
