"""``pqx sweep``: recall versus bits for several methods on one dataset, with faiss reference rows."""
from __future__ import annotations

import csv
import io
import sys

from .. import methods
from ..atomic import atomic_open
from ..data import training_rows
from ..errors import InvalidParameter
from ..report import write_json_atomic
from ..sweep import REFERENCES, flat_row, parse_bits, parse_methods, sweep
from ..validation import check_output_path
from ._common import (StopOnSignals, add_data_arguments, add_sink_arguments, fall_back_device, load_dataset, make_sinks,
                      run_until_aborted)

HELP = "train a grid of methods × code lengths and compare recall with faiss PQ, OPQ, RQ and LSQ"
# SIGINT, SIGTERM or SIGHUP: the current fit stops at its next step, the sweep before its next
# run, the rows so far are written and the exit code is 128 + the signal number.


def add_arguments(p):
    p.add_argument("--methods", default="pq,opq", help=f"comma-separated, from: {', '.join(methods.available())} "
                   "(default pq,opq); a method with its own parameters is name[param=value,...], e.g. "
                   "sscq,sscq[preset=spq] puts SSCQ beside its SPQ baseline")
    p.add_argument("--bits", default="16,32,64", help="comma-separated code lengths in bits (default 16,32,64)")
    p.add_argument("--references", default=",".join(REFERENCES),
                   help=f"faiss reference quantizers, comma-separated from {', '.join(REFERENCES)}, or 'none' "
                   "(default: all)")
    p.add_argument("--iters", type=int, default=None, dest="n_iter",
                   help="training iterations for the methods that take n_iter (default: each method's own)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs for the deep methods (default: their own)")
    p.add_argument("--device", default=None, help="cpu (default), cuda, mps or auto, for methods that take it")
    p.add_argument("--train-size", type=int, default=None, metavar="N",
                   help="fit every run on the seeded sample of N base vectors that pqx train --train-size takes "
                        "(default: all)")
    add_data_arguments(p)
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the rows here as a JSON list")
    p.add_argument("--csv", default=None, metavar="OUT.csv", help="write the rows here as CSV (recall_at spread into columns)")
    p.add_argument("--quiet", action="store_true", help="no table on stdout")
    add_sink_arguments(p, per_run=True)


def _names(text: str, what: str, valid) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InvalidParameter(f"--{what} is empty; give a comma-separated list from: {', '.join(valid)}")
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise InvalidParameter(f"--{what}: unknown {', '.join(map(repr, unknown))}; choose from: {', '.join(valid)}")
    return names


def _fmt(value, spec: str) -> str:
    if value is None:  # keep the column: the width is the digits before any "." in spec
        width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
        return "-".rjust(int(width or 1)) if not spec.startswith("<") else "-".ljust(int(width or 1))
    return format(value, spec)


def _print_row(row: dict, width: int = 12) -> None:
    r = row["recall_at"]
    tail = f"  error: {row['error']}" if "error" in row else ""
    print(f"{row['method']:<{width}} {row['bits']:>5} {_fmt(row['subspaces'], '>3')}×{_fmt(row['codewords'], '<5')} "
          f"{_fmt(row['distortion'], '>11.4f')} {_fmt(r['1'], '>6.3f')} {_fmt(r['10'], '>6.3f')} {_fmt(r['100'], '>6.3f')} "
          f"{_fmt(row['map'], '>6.3f')} {_fmt(row['fit_seconds'], '>8.2f')}{tail}", flush=True)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value) -> str | int | float:
    """``value`` as a CSV cell that no spreadsheet runs as a formula: None is empty, numbers stay
    numbers, and text starting with = + - @ (or a tab or carriage return, which some spreadsheets
    skip before such a sign) gets a leading apostrophe, the OWASP "CSV injection" escape that
    spreadsheets show as text (a dataset named ``=2+5`` is written ``'=2+5``)."""
    if value is None:
        return ""
    if isinstance(value, (bool, int, float)):
        return value
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def write_csv_atomic(path, rows: list[dict]) -> None:
    """Write rows as CSV (one per row, :data:`~explorer.sweep.CSV_COLUMNS`, text cells escaped
    by :func:`csv_cell`) through :func:`~explorer.atomic.atomic_open`: no partial file is ever left."""
    from ..sweep import CSV_COLUMNS
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell(v) for k, v in flat_row(row).items()})
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(buf.getvalue())


def run(args) -> int:
    return run_until_aborted(_run, args, "pqx sweep", "no rows written")


def _run(args) -> int:
    names = parse_methods(args.methods)  # names or specs such as sscq[preset=spq]
    refs = [] if args.references.strip().lower() == "none" else _names(args.references, "references", REFERENCES)
    bits = parse_bits(args.bits)
    for path, flag in ((args.json, "--json"), (args.csv, "--csv")):
        if path:
            check_output_path(path, flag)
    overrides = {k: v for k, v in {"n_iter": args.n_iter, "epochs": args.epochs, "device": args.device}.items()
                 if v is not None}
    overrides = fall_back_device(overrides, "pqx sweep")
    sinks = make_sinks(args, per_run=True)  # paths checked now, files written with the runs
    ds = load_dataset(args)
    if args.train_size is not None:
        training_rows(ds, args.train_size, args.seed, name="--train-size")  # refuse a bad size before any run
    width = max([12] + [len(spec.label) for spec in names])  # sscq[preset=spq] is 16
    show = (lambda event: _print_row(event.row, width)) if not args.quiet else None
    if show:
        print(f"sweep on {ds.name}: {ds.n}×{ds.dim}, {len(ds.queries)} queries, seed {args.seed}"
              + ("" if args.train_size is None else f", each fit on a sample of {args.train_size}"))
        print(f"{'method':<{width}} {'bits':>5} {'M×K':<9} {'distortion':>11} {'R@1':>6} {'R@10':>6} {'R@100':>6} "
              f"{'mAP':>6} {'fit s':>8}")
    with StopOnSignals(prog="pqx sweep") as signals:
        # a signal ends the current fit at its next step (its row says "stopped": true) and the
        # sweep before the next run; the rows finished so far are written
        rows = sweep(ds, names, bits, references=refs, random_state=args.seed, overrides=overrides, callbacks=[show],
                     fit_callbacks=sinks, train_size=args.train_size, stop=signals.stop)
        if signals.received:
            sys.stderr.write(f"\npqx sweep: interrupted by {signals.name}; writing the {len(rows)} row(s) finished "
                             "so far\n")
        signals.phase = "writing the rows"
        if args.json:
            write_json_atomic(args.json, rows)
        if args.csv:
            write_csv_atomic(args.csv, rows)
    return signals.exit_code
