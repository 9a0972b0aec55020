"""The base every view shares: record events cheaply, redraw one FigureWidget in place.

A view is a subscriber to :mod:`explorer.events`. ``observe(event)`` keeps the little state the
view needs (cheap, called for every event, so line plots never miss a step); ``redraw()``
pushes that state into the view's single ``plotly`` ``FigureWidget`` inside one
``batch_update`` (one message to the browser). Calling a view with an event does both, which is
what unit tests and recorded-stream replays use; the dashboard instead observes every event
and redraws through :class:`explorer.events.Throttle`, a few times a second.
"""
from __future__ import annotations

import threading
from typing import Iterable

import plotly.graph_objects as go

from explorer.events import FitFailed, FitFinished, FitStarted, Note, Recorder, Step


class View:
    """One view: ``figure`` (a ``go.FigureWidget`` built once), ``widget`` (what to display)."""

    title = ""

    def __init__(self) -> None:
        self.figure = go.FigureWidget()
        self._lock = threading.RLock()

    # ---------------------------------------------------------------- event intake
    def observe(self, event) -> None:
        """Record what this view needs from ``event`` (no drawing)."""
        with self._lock:
            if isinstance(event, FitStarted):
                self.on_started(event)
            elif isinstance(event, Step):
                self.on_step(event)
            elif isinstance(event, Note):
                self.on_note(event)
            elif isinstance(event, (FitFinished, FitFailed)):
                self.on_finished(event)

    def __call__(self, event) -> None:
        self.observe(event)
        self.redraw()

    def replay(self, events: Iterable) -> "View":
        """Feed recorded events — a list, or an :class:`explorer.events.Recorder` — then redraw; return self."""
        if isinstance(events, Recorder):
            events = [e for e in (events.started, *events.steps, events.finished) if e is not None]
        for event in events:
            self.observe(event)
        self.redraw()
        return self

    def redraw(self) -> None:
        with self._lock, self.figure.batch_update():
            self._draw()

    # ---------------------------------------------------------------- hooks for subclasses
    def on_started(self, event: FitStarted) -> None:
        pass

    def on_step(self, event: Step) -> None:
        pass

    def on_note(self, event: Note) -> None:
        pass

    def on_finished(self, event) -> None:
        pass

    def _draw(self) -> None:
        raise NotImplementedError  # pragma: no cover

    # ---------------------------------------------------------------- display
    @property
    def widget(self):
        """The ipywidget to display: the figure, or a box holding it with the view's controls."""
        return self.figure

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
