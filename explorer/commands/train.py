"""``pqx train``: fit one method on one dataset, print a summary, optionally write the JSON report."""
from __future__ import annotations

import sys

from .. import methods
from ..events import Recorder
from ..report import build_report, write_json_atomic
from ._common import ProgressBar, add_data_arguments, add_method_arguments, load_dataset, method_params

HELP = "train a quantizer and report distortion, recall, mAP and codebook health"


def add_arguments(p):
    add_method_arguments(p)
    add_data_arguments(p)
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the full report here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    params = method_params(args)
    ds = load_dataset(args)
    quantizer = methods.create(args.method, **params)
    recorder = Recorder(max_steps=10_000)
    callbacks = [recorder] + ([] if args.quiet else [ProgressBar(quantizer.planned_steps)])
    # Unsupervised methods never see the labels: they are for scoring (mAP) only.
    quantizer.fit(ds.base, ds.labels if quantizer.supervised else None, callbacks=callbacks)
    report = build_report(quantizer, ds, recorder.history())
    recall = report["recall_at"]
    mp = "n/a" if report["map"] is None else f"{report['map']:.4f}"
    print(f"{quantizer.title} on {ds.name}: {report['n_base']}×{report['dim']}, M={report['subspaces']} "
          f"K={report['codewords']} ({report['bits']} bits)")
    print(f"distortion {report['distortion']:.4f}  recall@1/10/100 {recall['1']:.3f}/{recall['10']:.3f}/{recall['100']:.3f}"
          f"  mAP {mp}  collapsed subspaces {sum(report['collapsed'])}/{report['subspaces']}  "
          f"fit {report['fit_seconds']:.2f}s")
    if args.json:
        write_json_atomic(args.json, report)
    return 0
