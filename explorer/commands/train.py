"""``pqx train``: fit one method on one dataset, print a summary, optionally write the JSON report.

Ctrl-C (SIGINT) stops training after the current step; the report is still written, for the
model trained so far, with ``"interrupted": true``, and the exit code is 130 (128 + SIGINT, the
shell convention). A second Ctrl-C aborts at once. ``--checkpoint DIR`` saves the training state
every ``--checkpoint-every`` steps and at the end (also when interrupted); ``--resume DIR``
continues from it and, with the same data, parameters and seed, ends with the same codes as an
uninterrupted run.

What stays on disk: a vector file given as ``--data`` is memory-mapped and stays there. Held-out
queries are read (``--n-queries`` rows) and skipped lazily in the base, without copying it
(:class:`~explorer.data.RowsExcept`); ``--learn PATH`` fits on a separate training file (SIFT1M's layout) and only encodes and
evaluates the base; ``--train-size N`` fits on a seeded sample of N base (or learn)
rows, gathered in file order, so only those N rows are read into memory; the evaluation reads
the base in batches (:func:`~explorer.report.evaluate`) and keeps only its codes, n × M bytes
for K ≤ 256. Without ``--train-size`` the fit reads the whole base into memory, as any fit on
all of it must. The report's ``n_train`` says how many vectors the fit saw.
"""
from __future__ import annotations

import signal
import sys
import threading

from .. import data, methods
from ..checkpoint import Checkpointer, load_checkpoint
from ..events import Recorder, StopSignal
from ..report import build_report, write_json_atomic
from ._common import (ProgressBar, add_data_arguments, add_method_arguments, fall_back_device, load_dataset,
                      method_params)

HELP = "train a quantizer and report distortion, recall, mAP and codebook health"
EXIT_INTERRUPTED = 130


def add_arguments(p):
    add_method_arguments(p)
    add_data_arguments(p)
    p.add_argument("--train-size", type=int, default=None, metavar="N",
                   help="fit on a seeded sample of N base vectors, read from the file alone (default: all)")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the full report here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--checkpoint", default=None, metavar="DIR", help="save the training state in DIR (atomically)")
    p.add_argument("--checkpoint-every", type=int, default=10, metavar="N",
                   help="with --checkpoint/--resume: save every N steps (default 10) and at the end")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the training saved in DIR (same data, method, parameters and --seed); "
                        "keeps checkpointing there unless --checkpoint names another DIR")


class _SigintStops:
    """Context manager: while active, the first SIGINT sets ``stop``; a second one aborts."""

    def __init__(self, stop: StopSignal) -> None:
        self.stop = stop

    def _handler(self, signum, frame):
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()

    def __enter__(self):
        # only the main thread may install handlers (cli.main called from a worker thread: leave SIGINT alone)
        self._active = threading.current_thread() is threading.main_thread()
        if self._active:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._active:
            signal.signal(signal.SIGINT, self._previous)
        return False


def run(args) -> int:
    try:
        return _run(args)
    except KeyboardInterrupt:  # second Ctrl-C, or Ctrl-C outside training: nothing is written
        sys.stderr.write("\npqx train: aborted by Ctrl-C; no report written\n")
        return EXIT_INTERRUPTED


def _run(args) -> int:
    params = fall_back_device(method_params(args), "pqx train")
    quantizer = methods.create(args.method, **params)
    state = load_checkpoint(args.resume) if args.resume else None
    ckpt_dir = args.checkpoint or args.resume
    checkpointer = Checkpointer(quantizer, ckpt_dir, every=args.checkpoint_every) if ckpt_dir else None
    ds = load_dataset(args)
    X, y = data.training_set(ds, args.train_size, args.seed, name="--train-size")
    recorder = Recorder(max_steps=10_000)
    callbacks = [recorder] + ([checkpointer] if checkpointer else []) + ([] if args.quiet else [ProgressBar(quantizer.planned_steps)])
    stop = StopSignal()
    with _SigintStops(stop):
        # Unsupervised methods never see the labels: they are for scoring (mAP) only.
        quantizer.fit(X, y if quantizer.supervised else None, callbacks=callbacks, stop=stop, resume=state)
    interrupted = stop.is_set()
    report = build_report(quantizer, ds, recorder.history())
    report["interrupted"] = interrupted
    report["n_train"] = len(X)
    report["resumed_from_step"] = None if state is None else int(state["step"])
    if interrupted:
        sys.stderr.write(f"\npqx train: interrupted by Ctrl-C after step {quantizer.n_steps_}; "
                         "reporting the model trained so far\n")
    recall = report["recall_at"]
    mp = "n/a" if report["map"] is None else f"{report['map']:.4f}"
    print(f"{quantizer.title} on {ds.name}: {report['n_base']}×{report['dim']}, M={report['subspaces']} "
          f"K={report['codewords']} ({report['bits']} bits)"
          + ("" if ds.learn is None else f", fit on the learn set ({len(ds.learn)} vectors)")
          + ("" if args.train_size is None else f", fit on a sample of {report['n_train']}"))
    print(f"distortion {report['distortion']:.4f}  recall@1/10/100 {recall['1']:.3f}/{recall['10']:.3f}/{recall['100']:.3f}"
          f"  mAP {mp}  collapsed subspaces {sum(report['collapsed'])}/{report['subspaces']}  "
          f"fit {report['fit_seconds']:.2f}s")
    if args.json:
        write_json_atomic(args.json, report)
    return EXIT_INTERRUPTED if interrupted else 0
