"""RunView: the views of one training run — usage, collapse, soft vs hard, embedding, losses —
for a run this kernel did not start.

``RunView("run.jsonl")`` follows an event log (:class:`explorer.events.EventLog`, ``pqx train
--events``) written by any process, on this machine or another one whose file you can read: a
finished log is replayed at once, a growing one is tailed in a background thread and the views
redraw as its steps arrive. ``RunView()`` with no source draws what is passed to
``view.callback``: give it to a :class:`~explorer.monitor.CodebookMonitor` watching your own
training loop, or to any ``fit(..., callbacks=[view.callback])``. The Dashboard is a RunView plus
controls and the recall-vs-bits view.
"""
from __future__ import annotations

import html
import os
import threading
import time

import ipywidgets as ipw
import numpy as np

from explorer.events import FitFailed, FitFinished, FitStarted, Step, Throttle
from explorer.eventlog import EventLogReader

from ._view import watch
from .collapse import CollapseView
from .embedding import EmbeddingView
from .losses import LossView
from .soft_hard import SoftHardView
from .usage import UsageView


def _section(title: str, widget):
    return ipw.VBox([ipw.HTML(f"<h3 style='margin:8px 0 2px'>{title}</h3>"), widget])


class RunView:
    """Usage, collapse, soft-vs-hard, embedding and loss views of one run, with a status line.

    source: an event-log path to follow (None: feed :attr:`callback` yourself).
    n_subspaces, n_codewords: the initial layout (each run's ``FitStarted`` re-lays it out).
    interval: seconds between redraws. sample_every: steps between embedding samples asked of the
        trainer (a log holds the samples its writer was asked for).
    timeout: when following, stop after this many seconds without a new event (None: until the
        run ends). poll: seconds between reads of a growing log.
    background_redraw: draw in a thread of the views' own, so the training thread only records
        (see :class:`widgets.watch`); False draws in the thread that delivers the events.
    """

    def __init__(self, source: str | os.PathLike | None = None, *, n_subspaces: int = 8, n_codewords: int = 256,
                 interval: float = 0.15, sample_every: int = 5, embedding: str = "t-SNE",
                 background_embedding: bool = True, timeout: float | None = None, poll: float = 0.2,
                 background_redraw: bool = True):
        self.usage = UsageView(n_subspaces, n_codewords)
        self.collapse = CollapseView(n_subspaces)
        self.soft_hard = SoftHardView()
        self.embedding = EmbeddingView(algorithm=embedding, sample_every=sample_every, background=background_embedding)
        self.losses = LossView()
        self.views = {"usage": self.usage, "collapse": self.collapse, "soft_hard": self.soft_hard,
                      "embedding": self.embedding, "losses": self.losses}
        self.status = ipw.HTML("Waiting for events…", _dom_classes=["pqx-status"])
        self.status_text = "Waiting for events…"
        self.last_step: Step | None = None
        self.finished = None
        self._watch = watch(*self.views.values(), interval=interval, background=background_redraw)
        self._status = Throttle(self._say_step, interval=interval)
        self.callback = self._make_callback()
        """Pass it to a :class:`~explorer.monitor.CodebookMonitor` or ``fit(..., callbacks=[view.callback])``."""
        self.source = None if source is None else os.fspath(source)
        self.timeout, self.poll = timeout, float(poll)
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self.widget = self._layout()
        if self.source is not None:
            self._follow_start()

    # ---------------------------------------------------------------- intake
    def _make_callback(self):
        """The training callback feeding this view; it asks trainers for the embedding view's samples."""
        def callback(event):
            self._on_event(event)
        callback.sample_every = self._watch.sample_every
        return callback

    def _on_event(self, event) -> None:
        self._watch(event)
        self._status(event)  # a step's line at most once per interval: every message goes to the page
        if isinstance(event, Step):
            self.last_step = event
        elif isinstance(event, FitStarted):
            self.finished = None
            self._say(f"Run {event.method!r} started: M={event.n_subspaces}, K={event.n_codewords}.")
        elif isinstance(event, (FitFinished, FitFailed)):
            self.finished = event
            self._say(self._end_text(event))

    @property
    def figures(self) -> dict:
        """name → the view's plotly FigureWidget."""
        return {name: view.figure for name, view in self.views.items()}

    def snapshot(self, path=None, format: str = "png", **size):
        """Static pictures of every view (``{name: Image}``, displayed one after another in a
        notebook and kept in its saved outputs); ``path``: also write ``path/<name>.<format>``."""
        from ._view import snapshot_figures

        return snapshot_figures(self.figures, path, format, **size)

    def replay(self, events) -> "RunView":
        """Feed recorded events (a list, or a Recorder's) and redraw; return self."""
        for event in events:
            for view in self.views.values():
                view.observe(event)
            if isinstance(event, Step):
                self.last_step = event
            elif isinstance(event, (FitFinished, FitFailed)):
                self.finished = event
        self.redraw()
        return self

    def redraw(self) -> None:
        for view in self.views.values():
            view.redraw()
        if self.finished is not None:
            self._say(self._end_text(self.finished))
        elif self.last_step is not None:
            self._say(self._step_text(self.last_step))

    # ---------------------------------------------------------------- following a log
    def _follow_start(self) -> None:
        self._reader = EventLogReader(self.source)
        self._say(f"Following {self.source}…")
        self.replay(self._reader.poll())           # what is there now, at once
        if self._reader.finished:
            return
        self._thread = threading.Thread(target=self._follow, daemon=True, name="pqx-runview-follow")
        self._thread.start()

    def _follow(self) -> None:
        last_news = time.monotonic()
        while not self._halt.is_set():
            try:
                events = self._reader.poll()
            except Exception as exc:  # a corrupt log: say so in the view, stop following
                self._say(f"Stopped following {self.source}: {exc}")
                return
            for event in events:
                self._on_event(event)
            if events:
                last_news = time.monotonic()
            if self._reader.finished:
                return
            if self.timeout is not None and time.monotonic() - last_news >= self.timeout:
                self._say(f"No new event in {self.source} for {self.timeout:g} s; stopped following.")
                return
            self._halt.wait(self.poll)

    @property
    def following(self) -> bool:
        """True while a background thread tails the log."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> "RunView":
        """Block until the followed run ends (or ``timeout`` seconds); return self."""
        if self._thread is not None:
            self._thread.join(timeout)
        self.embedding.wait(timeout)
        return self

    def stop(self) -> None:
        """Stop following the log (the views keep what they show)."""
        self._halt.set()

    # ---------------------------------------------------------------- status and layout
    @staticmethod
    def _step_text(event: Step) -> str:
        epoch = "" if event.epoch is None else f" (epoch {event.epoch:.2f})"
        return (f"step {event.step}{epoch}: loss {event.loss:.4g}, mean perplexity "
                f"{float(np.mean(event.perplexity)):.1f}, {int(np.sum(event.dead_codes))} dead codewords")

    @staticmethod
    def _end_text(event) -> str:
        if isinstance(event, FitFailed):
            return f"Run failed after {event.steps} steps: {event.error}"
        verb = "stopped" if event.stopped else "finished"
        return f"Run {verb} after {event.steps} steps ({event.seconds:.1f} s)."

    def _say_step(self, event) -> None:
        if isinstance(event, Step):
            self._say(self._step_text(event))

    def _say(self, text: str) -> None:
        self.status_text = text
        self.status.value = html.escape(text)

    def panels(self) -> list:
        """The views' sections (what the Dashboard lays out under its controls)."""
        half = ipw.Layout(width="460px")
        return [
            _section("Codeword usage", self.usage.widget),
            ipw.HBox([ipw.Box([_section("Collapse monitor", self.collapse.widget)], layout=half),
                      ipw.Box([_section("Loss curves", self.losses.widget)], layout=half)],
                     layout=ipw.Layout(flex_flow="row wrap")),
            ipw.HBox([ipw.Box([_section("Soft vs hard", self.soft_hard.widget)], layout=half),
                      ipw.Box([_section("Subspace embedding", self.embedding.widget)], layout=half)],
                     layout=ipw.Layout(flex_flow="row wrap")),
        ]

    def _layout(self):
        return ipw.VBox([self.status, *self.panels()], _dom_classes=["pqx-run-view"])

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
