"""The base every view shares: record events cheaply, redraw one FigureWidget in place.

A view is a subscriber to :mod:`explorer.events`. ``observe(event)`` keeps the little state the
view needs (cheap, called for every event, so line plots never miss a step); ``redraw()``
pushes that state into the view's single ``plotly`` ``FigureWidget`` as one ``plotly_update``
message, its arrays unvalidated (see :meth:`View._restyle`). Calling a view with an event does both, which is
what unit tests and recorded-stream replays use; the dashboard instead observes every event
and redraws through :class:`explorer.events.Throttle`, a few times a second.

``snapshot()`` exports the figure as a static PNG or SVG (plotly's kaleido driving a headless
Chromium), which notebooks display after a programmatic run so that GitHub and nbviewer, which
keep no widget state, show the pictures too.
"""
from __future__ import annotations

import atexit
import os
import shutil
import threading
import time
import warnings
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from explorer.atomic import atomic_path
from explorer.errors import InvalidParameter
from explorer.events import FitFailed, FitFinished, FitStarted, Note, Recorder, Step

SNAPSHOT_FORMATS = ("png", "svg")
DEFAULT_CHROMIUM = "/usr/bin/chromium"  # Debian's package, what .ci/run installs
_export_lock = threading.Lock()
_server_started = False


def _start_kaleido() -> None:
    """Point kaleido at Debian's Chromium (unless BROWSER_PATH says otherwise) and keep one
    browser running for the process: the first export then costs ~4 s, later ones ~0.3 s."""
    global _server_started
    if _server_started:
        return
    if not os.environ.get("BROWSER_PATH"):
        found = DEFAULT_CHROMIUM if os.path.exists(DEFAULT_CHROMIUM) else shutil.which("chromium")
        if found:
            os.environ["BROWSER_PATH"] = found
    import kaleido

    try:
        kaleido.start_sync_server(silence_warnings=True)
    except Exception as exc:  # choreographer's ChromeNotFoundError and kin
        raise RuntimeError(f"snapshot needs Chromium or Chrome for kaleido: {exc} (on Debian: apt-get install "
                           "chromium; elsewhere set BROWSER_PATH to the browser's executable)") from exc
    atexit.register(kaleido.stop_sync_server, silence_warnings=True)
    _server_started = True


def figure_image(figure, format: str = "png", width: int | None = None, height: int | None = None,
                 scale: float = 1.0) -> bytes:
    """Return ``figure`` (a plotly Figure or FigureWidget) rendered as PNG or SVG bytes.

    width, height: pixels (default: the figure's layout size, else plotly's 700 x 500).
    scale: PNG resolution multiplier (2 for high-DPI screens; larger files).
    """
    if format not in SNAPSHOT_FORMATS:
        raise InvalidParameter(f"format={format!r} is not supported; use one of {', '.join(SNAPSHOT_FORMATS)}")
    with _export_lock:
        _start_kaleido()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "kopts ignored when using a server"
            return pio.to_image(figure, format=format, width=width, height=height, scale=scale)


def _displayable(data: bytes, format: str):
    """An IPython ``Image`` (PNG) or ``SVG`` holding ``data``: a notebook shows it as a static picture."""
    from IPython.display import SVG, Image

    return Image(data=data, format="png") if format == "png" else SVG(data=data)


def _write(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


class Snapshots(dict):
    """Static pictures of several views, ``{name: IPython Image or SVG}``; displaying it shows
    every picture in turn, one output each, in the order of the views."""

    def _ipython_display_(self):
        from IPython.display import display

        for image in self.values():
            display(image)


def snapshot_figures(figures: Mapping[str, go.Figure], path=None, format: str = "png", **size) -> Snapshots:
    """Return :class:`Snapshots` of ``figures`` ({name: figure}); with ``path`` (a folder, created
    if missing) also write each one to ``path/<name>.<format>``. ``size``: see :func:`figure_image`."""
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
    shots = Snapshots()
    for name, figure in figures.items():
        data = figure_image(figure, format, **size)
        if path is not None:
            _write(Path(path) / f"{name}.{format}", data)
        shots[name] = _displayable(data, format)
    return shots


def wire_array(values) -> np.ndarray:
    """``values`` as a 1-D numpy array that plotly's widget sends as a binary buffer.

    plotly's serialiser turns int64 and uint64 arrays (numpy's default integers: counts, step
    numbers, ``argsort`` ids) into Python lists, which ipywidgets then walks element by element
    for buffers; int32 and float64 arrays go as they are. Integers that fit int32 become int32,
    larger ones float64 (exact below 2**53)."""
    a = np.asarray(values)
    if a.dtype.kind in "iu" and a.dtype.itemsize == 8:
        fits = a.size == 0 or (int(a.min()) >= -2**31 and int(a.max()) < 2**31)
        return a.astype(np.int32 if fits else np.float64)
    return np.ascontiguousarray(a)


def _frozen(value):
    """A value for :meth:`View._restyle`: an array or list as a read-only :func:`wire_array` copy
    (a list holding None as float64, None a NaN: a gap in a line), anything else as it is."""
    if not isinstance(value, (np.ndarray, list, tuple)):
        return value
    frozen = isinstance(value, np.ndarray) and not value.flags.writeable and value.base is None
    if frozen and wire_array(value) is value:
        return value  # already frozen (one array shared by several traces): no copy
    a = np.asarray(value)
    if a.dtype == object:
        a = np.asarray(value, dtype=float)
    wire = wire_array(a)
    if isinstance(value, np.ndarray) and np.may_share_memory(wire, value):
        wire = wire.copy()  # the view's own array may change later; the figure's must not
    wire.flags.writeable = False
    return wire


def _serialise_frontend_updates(figure: go.FigureWidget, lock: threading.RLock) -> None:
    """Make ``figure`` take the browser's messages only while it holds ``lock``, the lock its
    redraws hold.

    Plotly's page answers every redraw with a delta message, which the kernel applies in its main
    thread through ipywidgets' ``set_state``. While that runs, traitlets holds the widget's change
    notifications and merges them per trait. A redraw made meanwhile from a training or drawing
    thread sets ``_py2js_update`` to its message and back to ``None``; the merged notification
    then sends only ``None``. The page never receives the update, and its bars freeze while the
    status line, a widget that receives no messages, goes on. With both sides under one lock, the
    two never interleave.
    """
    apply = figure.set_state

    def set_state(sync_data):
        with lock:
            apply(sync_data)

    figure.set_state = set_state


PAGE_WAIT = 5.0
"""Seconds a live redraw waits, at most, for the page to draw the previous update (see
:meth:`View.page_behind`); after that it sends anyway (a page that was closed answers nothing)."""


class View:
    """One view: ``figure`` (a ``go.FigureWidget`` built once), ``widget`` (what to display).

    Live redraws wait for the page: plotly's page answers each update it has drawn with the
    figure's trace deltas. A view whose figure a page has answered at least once sends its next
    live update only after that page drew the last one (:meth:`page_behind`), so a slow browser
    is sent fewer updates instead of a growing queue of them. Without that, software-rendered
    Chromium here fell a minute behind a paced run: bars and status lines showed steps long
    past, and Stop's final line came 45 s late.
    """

    title = ""

    def __init__(self) -> None:
        self.figure = go.FigureWidget()
        self._lock = threading.RLock()
        _serialise_frontend_updates(self.figure, self._lock)
        self._page_answers = 0  # updates a page has answered (drawn): 0 = no page shows this figure
        self._sent_at = 0.0
        self.figure.observe(self._page_answered, names="_js2py_traceDeltas")
        self._pending: tuple[dict, dict] | None = None  # (trace edits, layout edits) of a redraw in progress
        self._paths_checked: set = set()  # (trace uid, property path) pairs plotly's schema accepted

    def _page_answered(self, change) -> None:
        if change["new"]:  # plotly resets the trait to None once it has read the answer
            self._page_answers += 1

    def page_behind(self) -> bool:
        """True while a page showing this figure has not drawn the last update sent to it, for up
        to :data:`PAGE_WAIT` seconds after sending. False where no page ever answered (tests,
        nbval, a view not displayed): there is nothing to wait for."""
        return (self._page_answers > 0 and bool(getattr(self.figure, "_trace_edit_in_process", False))
                and time.monotonic() - self._sent_at < PAGE_WAIT)

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

    def redraw(self, live: bool = False) -> bool:
        """Push the recorded state to the figure (one message). ``live``: skip it while the page
        is behind (:meth:`page_behind`) and return False; the caller redraws again later."""
        with self._lock:
            if live and self.page_behind():
                return False
            self._pending = ({}, {})
            try:
                with self.figure.batch_update():  # what _draw sets as properties (rare: re-layouts)
                    self._draw()
                self._send_pending()
            finally:
                self._pending = None
            self._sent_at = time.monotonic()
            return True

    # ---------------------------------------------------------------- fast updates
    def _restyle(self, trace: int, values: Mapping[str, object]) -> None:
        """In :meth:`_draw`: give trace ``trace`` these values (``{"y": array, "marker.color":
        array}``), sent with the redraw's one ``plotly_update`` message.

        Unlike ``figure.data[i].y = ...``, this skips plotly's validation of each property, which
        in plotly 7 costs ~0.2 ms an array whatever its length (a dataframe check through
        narwhals): with 16 lines of history a collapse-view pass took 4.6 ms, 0.9 ms this way. The
        views pass what plotly's validation would have produced (numeric 1-D arrays, strings),
        so the figure holds the same values. Arrays go through :func:`wire_array` (binary
        buffers) and are stored read-only copies, as validation stores them."""
        self._pending[0].setdefault(int(trace), {}).update({key: _frozen(v) for key, v in values.items()})

    def _relayout(self, values: Mapping[str, object]) -> None:
        """In :meth:`_draw`: set layout paths (``{"title.text": "...", "annotations[2].text": ...}``)
        in the redraw's one message, unvalidated like :meth:`_restyle`."""
        self._pending[1].update(values)

    def _send_pending(self) -> None:
        """Apply the redraw's edits to the figure and send those that changed something, as one
        ``plotly_update`` message.

        This is ``figure.plotly_update`` without two of its costs, which were most of a pass
        (3.7 ms for the dashboard's five views here; a pass runs beside training, on its cores):
        the check of every (trace, property path) pair against the trace's schema, done here once
        per pair and view with plotly's own test (``_is_key_path_compatible``); and the dispatch
        to ``on_change`` callbacks of traces, which the views do not register. Values are set
        with plotly's own ``_set_in``, which also tells whether a value changed; only changed
        (trace, property) pairs are sent. Layout edits go through plotly's relayout as before."""
        traces, layout = self._pending
        if not traces and not layout:
            return
        from plotly.basedatatypes import BaseFigure, Undefined

        figure = self.figure
        changed: dict[int, dict] = {}
        for i, values in traces.items():
            data = figure._data[i]
            for key, value in values.items():
                if (data.get("uid"), key) not in self._paths_checked:  # a rebuilt trace has a new uid
                    if not BaseFigure._is_key_path_compatible(key, figure.data[i]):
                        raise ValueError(f"{type(self).__name__}: trace {i} ({figure.data[i].type}) has no "
                                         f"property {key!r}")
                    self._paths_checked.add((data.get("uid"), key))
                if BaseFigure._set_in(data, key, value):
                    changed.setdefault(i, {})[key] = value
        relayout = figure._perform_plotly_relayout(dict(layout)) if layout else {}
        if not changed and not relayout:
            return
        order = sorted(changed)
        keys = sorted({key for values in changed.values() for key in values})
        restyle = {key: [changed[i].get(key, Undefined) for i in order] for key in keys}
        figure._send_update_msg(restyle_data=restyle, relayout_data=relayout, trace_indexes=order)
        if relayout:
            figure._dispatch_layout_change_callbacks(relayout)

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
    def snapshot(self, path=None, format: str = "png", **size):
        """Return this view's figure as a static picture (an IPython ``Image`` for PNG, ``SVG``
        for SVG) that a notebook displays and keeps in its saved outputs.

        path: also write the picture to this file. format: "png" or "svg".
        size: ``width``/``height`` in pixels and ``scale`` (see :func:`figure_image`).
        Needs Chromium (Debian's ``/usr/bin/chromium`` is used unless ``BROWSER_PATH`` is set).
        """
        with self._lock:  # a consistent copy, even while a training thread redraws
            figure = go.Figure(self.figure.to_dict())
        data = figure_image(figure, format, **size)
        if path is not None:
            _write(path, data)
        return _displayable(data, format)

    @property
    def widget(self):
        """The ipywidget to display: the figure, or a box holding it with the view's controls."""
        return self.figure

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


class watch:
    """A training callback feeding ``views``: every event is observed by every view (line plots
    keep every step), and the views are redrawn at most once per ``interval`` seconds.

    ``model.fit(X, callbacks=[watch(usage, soft_hard)])`` is the dashboard's wiring without its
    controls, for notebooks that compare runs side by side. Embedding views get their samples:
    ``sample_every`` is the smallest of the views' own ``sample_every`` (0 = none asked).

    background=False: redraws run in the training thread, through
    :class:`explorer.events.Throttle`. background=True: the training thread only observes (cheap
    bookkeeping) and a drawing thread redraws what changed, at most once per ``interval``, so
    training does not wait for figures to be serialised (torch and faiss release the GIL, so the
    drawing runs beside them on another core). Either way the end of a run (``FitFinished`` /
    ``FitFailed``) is drawn before the callback returns, so the final state is on screen when the
    fit returns. ``redraws`` counts the drawing passes.
    """

    def __init__(self, *views: View, interval: float = 0.3, background: bool = False):
        from explorer.events import Throttle

        self.views = views
        self.interval = float(interval)
        self.background = bool(background)
        self.redraws = 0
        self._redraw = Throttle(self._draw_all, interval=interval)
        periods = [int(getattr(v, "sample_every", 0) or 0) for v in views]
        self.sample_every = min([p for p in periods if p > 0], default=0)
        self._dirty = threading.Event()
        self._running = self.background
        self._drawer: threading.Thread | None = None
        self._draw_lock = threading.Lock()
        if self.background:
            # Started here, in the thread that builds the views (a notebook cell's), not lazily in a
            # training thread: in JupyterLab, widget messages sent from a thread that a training
            # thread started never reached the page (measured: bars frozen), while those of a
            # thread started by the cell did. The freezes left after that change (JupyterLab, some
            # runs) were a different cause, fixed in :func:`_serialise_frontend_updates`.
            self._drawer = threading.Thread(target=self._draw_loop, daemon=True, name="pqx-views-drawer")
            self._drawer.start()

    def _draw_all(self, event=None, live: bool = False) -> bool:
        """Redraw every view; ``live``: views whose page is behind are skipped. Returns True when
        every view was drawn."""
        with self._draw_lock:
            self.redraws += 1
            drawn = [view.redraw(live=True) if live else view.redraw() for view in self.views]
            return all(d is not False for d in drawn)  # None: a view (or a test's stand-in) without the flag

    def __call__(self, event) -> None:
        for view in self.views:
            view.observe(event)
        if not self.background:
            self._redraw(event)
            return
        if isinstance(event, (FitFinished, FitFailed)):
            self._dirty.clear()
            self._draw_all()  # the final state, drawn before the fit returns
            return
        self._dirty.set()

    def _draw_loop(self) -> None:
        while self._running:
            if not self._dirty.wait(1.0) or not self._running:  # close() wakes it to end, not to draw
                continue
            self._dirty.clear()
            if not self._draw_all(live=True):
                self._dirty.set()  # a page was behind: its view is drawn on a later pass
            time.sleep(self.interval)

    def close(self, timeout: float | None = 5.0) -> None:
        """End the drawing thread (a daemon: it also ends with the process) and wait for it, up to
        ``timeout`` seconds for a pass in progress, so that nothing is drawn after close returns.
        (It used to wake the thread for one more pass, which could then run while the interpreter
        exited.)"""
        self._running = False
        self._dirty.set()
        if self._drawer is not None and self._drawer is not threading.current_thread():
            self._drawer.join(timeout)
