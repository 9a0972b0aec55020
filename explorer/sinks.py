"""Sinks: callbacks that hand training events to other tools. Today: TensorBoard.

A sink owns no training logic; it turns the events any run emits (a built-in method, a
:class:`~explorer.monitor.CodebookMonitor`, an event log replayed with
:func:`~explorer.events.read_events`) into the other tool's records.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from .diagnostics import collapsed_mask
from .errors import InvalidParameter
from .events import FitFailed, FitFinished, FitStarted, Note, Step


class TensorBoard:
    """Callback writing a run to TensorBoard event files in ``logdir`` (tensorboard is optional).

    Tags, grouped by TensorBoard on the part before the first slash:
      ``perplexity/<m>`` and ``perplexity/mean``; ``dead_codes/<m>`` and ``dead_codes/total``;
      ``collapsed/<m>`` (1 while the collapse detector flags subspace m) and ``collapsed/total``;
      ``loss/<term>`` for every loss term; ``soft_hard/gap`` and ``soft_hard/agreement``;
      ``usage/<m>``: the usage counts as a histogram already binned (``add_histogram_raw``, one
      bucket per codeword); embedding samples go to the projector (tag ``subspace_<m>``,
      metadata = codeword), at the cadence ``sample_every`` (0: none).
    Every record carries the event's step and the wall time. The writer (torch's
    ``SummaryWriter``) is created at the first event, flushed at each run's end and closed by
    :meth:`close`; a missing tensorboard package raises an error saying how to install it.
    """

    def __init__(self, logdir: str | os.PathLike, *, sample_every: int = 0) -> None:
        self.logdir = os.fspath(logdir)
        if os.path.exists(self.logdir) and not os.path.isdir(self.logdir):
            raise InvalidParameter(f"TensorBoard logdir {self.logdir} is a file; name a folder")
        self.sample_every = int(sample_every)
        self._writer = None
        self._usable = None

    @property
    def writer(self):
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise InvalidParameter("the TensorBoard sink needs the tensorboard package: "
                                       "pip install tensorboard (or pq-explorer[test])") from None
            self._writer = SummaryWriter(log_dir=self.logdir)
        return self._writer

    def __call__(self, event) -> None:
        if isinstance(event, FitStarted):
            self._usable = event.usable_codewords
            self.writer.add_text("run/params", f"{event.method}: `{json.dumps(event.params, default=str)}`", 0)
        elif isinstance(event, Step):
            self._step(event)
        elif isinstance(event, Note):
            self.writer.add_text(f"note/{event.topic}", event.message, event.step)
        elif isinstance(event, (FitFinished, FitFailed)):
            if isinstance(event, FitFailed):
                self.writer.add_text("run/failed", event.error, event.steps)
            self.writer.flush()

    def _step(self, e: Step) -> None:
        w, step, t = self.writer, int(e.step), time.time()
        usage = np.asarray(e.usage)
        M, K = usage.shape
        distinct = None if self._usable is None else np.full(M, self._usable)
        flags = collapsed_mask(usage, n_distinct=distinct)
        for m in range(M):
            w.add_scalar(f"perplexity/{m}", float(e.perplexity[m]), step, walltime=t)
            w.add_scalar(f"dead_codes/{m}", int(e.dead_codes[m]), step, walltime=t)
            w.add_scalar(f"collapsed/{m}", int(flags[m]), step, walltime=t)
            counts = usage[m].astype(np.float64)
            ks = np.arange(K, dtype=np.float64)
            w.add_histogram_raw(f"usage/{m}", min=0.0, max=float(K - 1), num=float(counts.sum()),
                                sum=float((ks * counts).sum()), sum_squares=float((ks ** 2 * counts).sum()),
                                bucket_limits=(ks + 0.5).tolist(), bucket_counts=counts.tolist(),
                                global_step=step, walltime=t)
        w.add_scalar("perplexity/mean", float(np.mean(e.perplexity)), step, walltime=t)
        w.add_scalar("dead_codes/total", int(np.sum(e.dead_codes)), step, walltime=t)
        w.add_scalar("collapsed/total", int(flags.sum()), step, walltime=t)
        for name, value in e.losses.items():
            w.add_scalar(f"loss/{name}", float(value), step, walltime=t)
        if e.soft_hard:
            for name, value in e.soft_hard.items():
                w.add_scalar(f"soft_hard/{name}", float(value), step, walltime=t)
        if e.sample is not None:
            for m in range(M):
                w.add_embedding(e.sample.subvectors[m], metadata=e.sample.codes[:, m].tolist(),
                                tag=f"subspace_{m}", global_step=step)

    def close(self) -> None:
        """Flush and close the writer (a later event opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "TensorBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["TensorBoard"]
