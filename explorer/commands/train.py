"""``pqx train``: fit one method on one dataset, print a summary, optionally write the JSON report.

Ctrl-C (SIGINT), SIGTERM or SIGHUP stops training after the current step; the report is still
written, for the model trained so far, with ``"interrupted": true`` and ``"signal"`` naming it,
the checkpoint (with ``--checkpoint``) holds that step, and the exit code is 128 + the signal
number (130, 143, 129: the shell convention). A signal after the last step (during the
evaluation or the report write) shortens nothing: the report of the whole model is finished and
written (``"interrupted": false``, ``"signal"`` set) and the exit code still says the signal
came. A second signal aborts at once and writes no report (an output file is either whole or
absent: :mod:`explorer.atomic`). Output paths (``--json``, ``--checkpoint``) are checked before
any work. ``--checkpoint DIR`` saves the training state
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

import sys

from .. import data, methods
from ..checkpoint import Checkpointer, load_checkpoint
from ..events import Recorder
from ..report import build_report, write_json_atomic
from ..validation import check_output_path, count_distinct_rows
from ._common import (ProgressBar, StopOnSignals, add_data_arguments, add_method_arguments, add_sink_arguments,
                      fall_back_device, load_dataset, make_sinks, method_params, run_until_aborted)

HELP = "train a quantizer and report distortion, recall, mAP and codebook health"
EXIT_INTERRUPTED = 130


def add_arguments(p):
    add_method_arguments(p)
    add_data_arguments(p)
    p.add_argument("--train-size", type=int, default=None, metavar="N",
                   help="fit on a seeded sample of N base vectors, read from the file alone (default: all)")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the full report here")
    p.add_argument("--save", default=None, metavar="MODEL.pqx",
                   help="save the trained model here (explorer.load, pqx encode/search --model read it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--checkpoint", default=None, metavar="DIR", help="save the training state in DIR (atomically)")
    p.add_argument("--checkpoint-every", type=int, default=10, metavar="N",
                   help="with --checkpoint/--resume: save every N steps (default 10) and at the end")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the training saved in DIR (same data, method, parameters and --seed); "
                        "keeps checkpointing there unless --checkpoint names another DIR")
    add_sink_arguments(p)


def run(args) -> int:
    lost = "no report written" + (" (the checkpoint holds the last step saved)" if args.checkpoint or args.resume else "")
    try:  # a second signal: nothing more is written
        return run_until_aborted(_run, args, "pqx train", lost)
    except KeyboardInterrupt:  # Ctrl-C before training started: nothing is written
        sys.stderr.write("\npqx train: aborted by Ctrl-C before training; no report written\n")
        return EXIT_INTERRUPTED


def _run(args) -> int:
    for path, flag in ((args.json, "--json"), (args.save, "--save")):
        if path:
            check_output_path(path, flag)
    if args.checkpoint or args.resume:  # --resume alone keeps checkpointing into its folder
        check_output_path(args.checkpoint or args.resume, "--checkpoint" if args.checkpoint else "--resume", folder=True)
    sinks = make_sinks(args)  # their paths are checked now; their files appear with the first event
    params = fall_back_device(method_params(args), "pqx train")
    quantizer = methods.create(args.method, **params)
    state = load_checkpoint(args.resume) if args.resume else None
    ckpt_dir = args.checkpoint or args.resume
    checkpointer = Checkpointer(quantizer, ckpt_dir, every=args.checkpoint_every) if ckpt_dir else None
    ds = load_dataset(args)
    if ds.metric and "metric" in quantizer.param_names() and getattr(args, "opt_metric", None) is None:
        quantizer.set_params(metric=ds.metric)  # a file's ground truth says how it ranks (ann-benchmarks distance)
    X, y = data.training_set(ds, args.train_size, args.seed, name="--train-size")
    recorder = Recorder(max_steps=10_000)
    callbacks = ([recorder] + ([checkpointer] if checkpointer else []) + sinks
                 + ([] if args.quiet else [ProgressBar(lambda: quantizer.planned_steps)]))
    warnings = _few_distinct_vectors(X, quantizer.n_codewords)
    with StopOnSignals(prog="pqx train") as signals:
        # Unsupervised methods never see the labels: they are for scoring (mAP) only.
        quantizer.fit(X, y if quantizer.supervised else None, callbacks=callbacks, stop=signals.stop, resume=state)
        cut_short = signals.received  # the fit stopped at the step after the signal
        signals.phase = "the evaluation and the report"
        if cut_short:
            sys.stderr.write(f"\npqx train: interrupted by {signals.name} after step {quantizer.n_steps_}; "
                             "reporting the model trained so far\n")
        report = build_report(quantizer, ds, recorder.history())
        report["interrupted"] = cut_short
        report["signal"] = signals.signame  # also one received during the evaluation: the model is whole then
        report["n_train"] = len(X)
        report["resumed_from_step"] = None if state is None else int(state["step"])
        report["warnings"] = warnings
        _print_summary(quantizer, ds, report, args)
        if args.json:
            write_json_atomic(args.json, report)
        if args.save:
            quantizer.save(args.save)
    return signals.exit_code


def _few_distinct_vectors(X, n_codewords: int) -> list[str]:
    """The warnings (also printed on stderr) about training data with fewer distinct vectors than K."""
    if n_codewords > len(X):  # the fit refuses K > n with its own error
        return []
    n_distinct = count_distinct_rows(X)
    if n_distinct >= n_codewords:
        return []
    msg = (f"the {len(X)} training vectors hold only {n_distinct} distinct ones, fewer than K={n_codewords} "
           f"codewords: at most {n_distinct} codewords per subspace can be used and the rest stay dead; "
           f"use -K {n_distinct} or less, or more varied data")
    sys.stderr.write(f"pqx train: warning: {msg}\n")
    return [msg]


def _print_summary(quantizer, ds, report: dict, args) -> None:
    recall = report["recall_at"]
    mp = "n/a" if report["map"] is None else f"{report['map']:.4f}"
    print(f"{quantizer.title} on {ds.name}: {report['n_base']}×{report['dim']}, M={report['subspaces']} "
          f"K={report['codewords']} ({report['bits']} bits)"
          + ("" if ds.learn is None else f", fit on the learn set ({len(ds.learn)} vectors)")
          + ("" if args.train_size is None else f", fit on a sample of {report['n_train']}"))
    print(f"distortion {report['distortion']:.4f}  recall@1/10/100 {recall['1']:.3f}/{recall['10']:.3f}/{recall['100']:.3f}"
          f"  mAP {mp}  collapsed subspaces {sum(report['collapsed'])}/{report['subspaces']}  "
          f"fit {report['fit_seconds']:.2f}s")
