"""``pqx inspect``: the codebook health of a faiss index built elsewhere.

    pqx inspect --index prod.faissindex --data sample.fvecs --json health.json

Reads the index (``faiss.read_index``: IndexPQ, IndexIVFPQ, or either behind an
IndexPreTransform such as OPQ), encodes ``--data`` with it in batches and prints, per subspace,
the perplexity, dead codewords and the collapse verdict with its reason
(:func:`explorer.inspect.inspect_faiss`); ``--json`` writes them all, with the usage counts.
"""
from __future__ import annotations

from pathlib import Path

from .. import data
from ..errors import DataFileError, PQXError
from ..inspect import INSPECT_BATCH, inspect_faiss
from ..report import write_json_atomic
from ..validation import check_output_path

HELP = "codebook health (usage, perplexity, dead codes, collapse) of an existing faiss PQ / IVF-PQ / OPQ index"


def add_arguments(p):
    p.add_argument("--index", required=True, metavar="FILE", help="a faiss index file (faiss.write_index)")
    p.add_argument("--data", required=True, metavar="PATH", help="vectors to encode with it: its base or a sample")
    p.add_argument("--base-key", default=None, metavar="NAME", help="the .npz array to use (default: its base)")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the full result here")
    p.add_argument("--batch-size", type=int, default=INSPECT_BATCH, metavar="N", help="vectors encoded per batch")


def read_index(path):
    """The faiss index in file ``path``; :class:`DataFileError` naming ``--index`` when it cannot be read."""
    import faiss
    if not Path(path).is_file():
        raise DataFileError(f"--index {path}: no such file; give a file written by faiss.write_index")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataFileError(f"--index {path}: not a readable faiss index ({first[:120]})") from None


def run(args) -> int:
    if args.json:
        check_output_path(args.json, "--json")
    index = read_index(args.index)
    X = data.load(args.data, base_key=args.base_key).base
    try:
        result = inspect_faiss(index, X, batch_size=args.batch_size)
    except PQXError as exc:  # name the file the index came from
        raise type(exc)(f"--index {args.index}: {exc}") from None
    print(f"{result['index_type']}: M={result['subspaces']} K={result['codewords']} ({result['bits']} bits), "
          f"{result['n_base']} vectors of d={result['dim']}, distortion {result['distortion']:.4g}, "
          f"collapsed subspaces {sum(result['collapsed'])}/{result['subspaces']}")
    for v in result["verdicts"]:
        print(f"  subspace {v['subspace']}: {'COLLAPSED' if v['collapsed'] else 'healthy'} — {v['reason']}")
    if args.json:
        write_json_atomic(args.json, result)
    return 0
