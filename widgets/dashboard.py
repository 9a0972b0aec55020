"""The dashboard: controls, Start / Stop, a status line, an error area, and every view.

``Dashboard(method="pq", data="digits", **params)`` builds the controls from the method
registry, so a newly registered method appears in the dropdown with its own knobs (read from
its ``__init__`` signature, with its ``cli_options`` help as tooltips and a drop-down for each
parameter in its ``param_choices``) without editing this file.

Threading: Start trains in a ``threading.Thread`` with a :class:`~explorer.events.StopSignal`;
the kernel stays free. Every event is *observed* by every view (cheap bookkeeping, so line plots
keep every step) and the views are *redrawn* through :class:`~explorer.events.Throttle`, a few
times a second. Stop ends training at the next step and keeps the model in ``dash.model``.
After each finished fit the recall-vs-bits view gets the model's row (from
:func:`explorer.report.evaluate` on held-out queries) with the fit's recorded events (clicking
its point reopens that run's usage and collapse views) and, once per dataset and K, faiss's PQ and
OPQ reference curves trained on the same base vectors.

``pace`` (seconds per step, live runs only) is a slow-motion setting for watching: digits is so
small that k-means settles in a fraction of a second. Programmatic fits (``dash.fit()``) run at
full speed and are deterministic, so notebooks can run under nbval.
"""
from __future__ import annotations

import ast
import html
import inspect
import os
import threading
import traceback

import ipywidgets as ipw
import numpy as np

from explorer import data as datasets
from explorer import methods
from explorer.events import Recorder, Step, StopSignal, Throttle
from explorer.report import RECALL_AT
from explorer.sweep import DASHBOARD_REFERENCES, quantizer_row, record_without_samples, reference_rows

from .recall_bits import RecallBitsView
from .run_view import RunView, _section

COMMON = ("n_subspaces", "n_codewords", "n_iter", "epochs", "random_state", "device")
DATASETS = ("digits", "synthetic")
RECORDED_STEPS = 200
"""Steps of each fit the recall-vs-bits view keeps (a bounded Recorder) to reopen that run on click."""


# --------------------------------------------------------------------------- knobs
def _knob(name: str, default, help_text: str = "", choices: tuple | None = None):
    """An ipywidget editing one hyper-parameter: a drop-down of ``choices`` when the method names
    them (``param_choices``), else chosen from its default's type."""
    style = {"description_width": "initial"}
    layout = ipw.Layout(width="auto", min_width="170px", margin="2px 12px 2px 0")
    if choices:
        w = ipw.Dropdown(options=list(choices), value=default, description=name, style=style, layout=layout)
    elif isinstance(default, bool):
        w = ipw.Checkbox(value=default, description=name, indent=False, layout=layout)
    elif isinstance(default, int):
        w = ipw.IntText(value=default, description=name, style=style, layout=layout)
    elif isinstance(default, float):
        w = ipw.FloatText(value=default, description=name, style=style, layout=layout)
    else:  # str, None or anything else: typed text, parsed as a Python literal when it is one
        w = ipw.Text(value="" if default is None else str(default), placeholder="None", description=name,
                     style=style, layout=layout)
    w.tooltip = help_text or name
    return w


def _knob_value(widget):
    if isinstance(widget, ipw.Text):
        text = widget.value.strip()
        if text in ("", "None"):
            return None
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    return widget.value


def method_knobs(cls) -> dict:
    """{param: default} of a method's own hyper-parameters (its ``__init__`` minus the common ones)."""
    sig = inspect.signature(cls.__init__)
    return {name: p.default for name, p in sig.parameters.items()
            if name != "self" and name not in COMMON and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
            and p.default is not p.empty}


def steps_param(cls) -> str | None:
    """The parameter counting training steps: ``epochs`` for deep methods, ``n_iter`` for Lloyd-type."""
    names = cls.param_names()
    return "epochs" if "epochs" in names else ("n_iter" if "n_iter" in names else None)


# --------------------------------------------------------------------------- dashboard
class Dashboard:
    """Live training dashboard; display it in a notebook (it is its own widget).

    method, data: initial method name and dataset: a built-in name, a vector file path, an array of
        vectors (n, d) or a :class:`~explorer.data.Dataset` (see :func:`explorer.data.as_dataset`).
    params: the method's hyper-parameters (n_subspaces, n_codewords, n_iter or epochs, knobs).
    pace: slow motion for live runs, seconds per step at least (0 = full speed).
    interval: seconds between redraws (the throttle). sample_every: steps between embedding samples.
    n_queries / seed: held-out queries for recall and the seed of split and training.
    references: draw faiss PQ/OPQ reference curves (trained once per dataset and K, after the first
        fit); a dict {"pq": (M, ...), "opq": (M, ...)} picks the points (default explorer.sweep.DASHBOARD_REFERENCES).
    background_embedding: project embedding samples in a low-priority worker process (False: in the
        training thread).
    """

    def __init__(self, method: str = "pq", data="digits", *, pace: float = 0.0, interval: float = 0.15,
                 sample_every: int = 5, n_queries: int = 200, seed: int = 0, embedding: str = "t-SNE",
                 background_embedding: bool = True, references: bool | dict = True, **params):
        cls = methods.get(method)
        unknown = [p for p in params if p not in cls.param_names()]
        if unknown:
            raise ValueError(f"method {method!r} has no parameter(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(cls.param_names())}")
        self.pace = float(pace)
        self.references = references if isinstance(references, dict) else bool(references)
        self.interval = float(interval)
        self.n_queries = int(n_queries)
        self.seed = int(seed)
        self.model = None
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = StopSignal()
        self._wake = threading.Event()
        self._data_cache: dict = {}
        self._references_done: set = set()
        self._lock = threading.Lock()
        self._last_step = None

        # views: one RunView for the run being trained, plus recall vs bits across runs
        self.run = RunView(n_subspaces=params.get("n_subspaces", 8), n_codewords=params.get("n_codewords", 256),
                           interval=interval, sample_every=sample_every, embedding=embedding,
                           background_embedding=background_embedding)
        self.usage, self.collapse, self.soft_hard = self.run.usage, self.run.collapse, self.run.soft_hard
        self.embedding, self.losses = self.run.embedding, self.run.losses
        self.recall = RecallBitsView()
        self.views = {"usage": self.usage, "collapse": self.collapse, "soft_hard": self.soft_hard,
                      "embedding": self.embedding, "recall": self.recall, "losses": self.losses}

        # controls: data is a built-in name, a path, an array of vectors or a Dataset (explorer.data.as_dataset)
        self._data_objects: dict = {}
        data = self._data_option(data)
        options = list(DATASETS)
        if data not in options:
            options.append(data)
        self.method_w = ipw.Dropdown(options=methods.available(), value=method, description="method",
                                     style={"description_width": "initial"}, layout=ipw.Layout(width="160px"))
        self.data_w = ipw.Dropdown(options=options, value=data, description="data",
                                   style={"description_width": "initial"}, layout=ipw.Layout(width="180px"))
        narrow = {"description_width": "initial"}
        self.m_w = ipw.IntText(value=params.pop("n_subspaces", 8), description="M", style=narrow,
                               layout=ipw.Layout(width="110px"))
        self.k_w = ipw.IntText(value=params.pop("n_codewords", 256), description="K", style=narrow,
                               layout=ipw.Layout(width="120px"))
        self.steps_w = ipw.IntText(description="steps", style=narrow, layout=ipw.Layout(width="160px"))
        self.knobs_box = ipw.HBox(layout=ipw.Layout(flex_flow="row wrap"))
        self.knobs: dict = {}
        self.start_w = ipw.Button(description="Start", button_style="success", icon="play")
        self.stop_w = ipw.Button(description="Stop", button_style="danger", icon="stop")
        self.status = ipw.HTML("Ready.", _dom_classes=["pqx-status"])
        self.errors = ipw.HTML("", _dom_classes=["pqx-error"])
        self._set_method(method, params)
        self.method_w.observe(lambda change: self._set_method(change["new"], {}), names="value")
        self.start_w.on_click(lambda button: self.start())
        self.stop_w.on_click(lambda button: self.stop())
        self.widget = self._layout()

    # ---------------------------------------------------------------- controls
    def _set_method(self, name: str, params: dict) -> None:
        cls = methods.get(name)
        sp = steps_param(cls)
        defaults = dict(inspect.signature(cls.__init__).parameters)
        if sp is not None:
            self.steps_w.description = "iterations" if sp == "n_iter" else "epochs"
            self.steps_w.value = int(params.pop(sp, defaults[sp].default))
            self.steps_w.disabled = False
        else:
            self.steps_w.disabled = True
        helps = {opt.param: opt.help for opt in cls.cli_options}
        self.knobs = {}
        for pname, default in method_knobs(cls).items():
            self.knobs[pname] = _knob(pname, params.get(pname, default), helps.get(pname, ""),
                                      cls.param_choices.get(pname))
        self.knobs_box.children = list(self.knobs.values())

    def params(self) -> dict:
        """The hyper-parameters the controls describe, as keyword arguments of the method."""
        cls = methods.get(self.method_w.value)
        out = {"n_subspaces": int(self.m_w.value), "n_codewords": int(self.k_w.value), "random_state": self.seed}
        sp = steps_param(cls)
        if sp is not None:
            out[sp] = int(self.steps_w.value)
        out.update({name: _knob_value(w) for name, w in self.knobs.items()})
        return out

    def set_params(self, **params) -> "Dashboard":
        """Set controls programmatically (method first if given); return self."""
        if "method" in params:
            self.method_w.value = params.pop("method")
        if "data" in params:
            value = self._data_option(params.pop("data"))
            if value not in self.data_w.options:
                self.data_w.options = list(self.data_w.options) + [value]
            self.data_w.value = value
        cls = methods.get(self.method_w.value)
        for name, value in params.items():
            if name == "n_subspaces":
                self.m_w.value = value
            elif name == "n_codewords":
                self.k_w.value = value
            elif name == steps_param(cls):
                self.steps_w.value = value
            elif name in self.knobs:
                w = self.knobs[name]
                if isinstance(w, ipw.Dropdown) and value not in w.options:
                    raise ValueError(f"{name}={value!r} is not known; use one of {', '.join(map(str, w.options))}")
                w.value = ("" if value is None else str(value)) if isinstance(w, ipw.Text) else value
            else:
                raise ValueError(f"method {cls.name!r} has no parameter {name!r}; valid: {', '.join(cls.param_names())}")
        return self

    def _data_option(self, data) -> str:
        """The drop-down label of ``data``: a name or path as it is; an array or Dataset under a label
        ("array 1797×64", a Dataset's name), checked now by :func:`explorer.data.as_dataset`."""
        if isinstance(data, (str, os.PathLike)):
            return os.fspath(data)
        ds = datasets.as_dataset(data)
        label = ds.name if isinstance(data, datasets.Dataset) else f"{ds.name} {ds.n}×{ds.dim}"
        self._data_objects[label] = ds
        self._data_cache.pop(label, None)
        return label

    def dataset(self):
        """The selected dataset with ``n_queries`` held-out queries, and its exact ground truth."""
        name = self.data_w.value
        if name not in self._data_cache:
            ds = self._data_objects[name] if name in self._data_objects else datasets.as_dataset(name)
            ds = datasets.split_queries(ds, self.n_queries, random_state=self.seed)
            self._data_cache[name] = (ds, datasets.ground_truth(ds, max(RECALL_AT)))
        return self._data_cache[name]

    # ---------------------------------------------------------------- running
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def figures(self) -> dict:
        """name → the view's ``plotly`` FigureWidget."""
        return {name: view.figure for name, view in self.views.items()}

    def start(self) -> bool:
        """Start training in a background thread; refuse (with a message) while a run is active."""
        with self._lock:
            if self.running:
                self._say("Already training — press Stop first (the current run keeps going).", warn=True)
                return False
            job = self._prepare()
            if job is None:
                return False
            self._thread = threading.Thread(target=self._train, args=(*job, self.pace), daemon=True,
                                            name="pqx-dashboard-fit")
            self._thread.start()
            return True

    def stop(self) -> None:
        """Ask the running fit to end after its current step (the model is kept)."""
        if self.running:
            self._stop.set()
            self._wake.set()
            self._say("Stopping at the next step…")
        else:
            self._say("Nothing is training.")

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background run (and any embedding projection) has finished."""
        if self._thread is not None:
            self._thread.join(timeout)
        self.embedding.wait(timeout)

    def fit(self, blocking: bool = True, **params):
        """Train with the controls' settings (``params`` override them); return the fitted model.

        blocking=True trains in the caller's thread at full speed (deterministic: notebooks,
        tests); blocking=False is the Start button. Errors are shown in the dashboard and raised.
        """
        if params:
            self.set_params(**params)
        if not blocking:
            self.start()
            return None
        if self.running:
            raise RuntimeError("a run is active; call dash.stop() and dash.wait() first")
        job = self._prepare()
        if job is None:
            raise ValueError(self.last_error)
        self._train(*job, pace=0.0, reraise=True)
        self.embedding.wait()
        return self.model

    def _prepare(self):
        self.errors.value = ""
        self.last_error = None
        try:
            quantizer = methods.create(self.method_w.value, **self.params())
            ds, gt = self.dataset()
        except Exception as exc:  # bad parameters or data: shown, nothing starts
            self._show_error(exc)
            return None
        self._stop = StopSignal()
        self._wake.clear()
        return quantizer, ds, gt

    def _train(self, quantizer, ds, gt, pace: float = 0.0, reraise: bool = False) -> None:
        status = Throttle(self._step_status, interval=self.interval)
        views = self.run.callback  # observes every event, redraws the run's views a few times a second
        planned = quantizer.planned_steps

        def on_event(event):
            views(event)
            if isinstance(event, Step):
                self._last_step = event
            status(event)
            if pace > 0 and isinstance(event, Step):
                self._wake.wait(pace)  # slow motion; Stop wakes it at once

        on_event.sample_every = views.sample_every
        self._say(f"Training {quantizer.name} on {ds.name} ({ds.n}×{ds.dim}), M={quantizer.n_subspaces}, "
                  f"K={quantizer.n_codewords}" + (f", {planned} steps…" if planned else "…"))
        self._training = quantizer  # its planned_steps is known once the fit has the data (deep methods)
        y = ds.labels if quantizer.supervised else None
        try:
            recorder = Recorder(max_steps=RECORDED_STEPS)  # without embedding samples: usage and collapse need none
            quantizer.fit(ds.base, y, callbacks=[on_event, record_without_samples(recorder)], stop=self._stop)
        except Exception as exc:
            self.model = None
            self._show_error(exc)
            if reraise:
                raise
            return
        self.model = quantizer
        n = quantizer.n_steps_
        verb = f"Stopped at step {n}" if quantizer.stopped_ else f"Finished {n} step{'' if n == 1 else 's'}"
        self._say(f"{verb} in {quantizer.fit_seconds_:.1f} s; measuring recall on {len(ds.queries)} held-out queries…")
        try:
            row = quantizer_row(quantizer, ds, gt)
            self.recall.add_row(row, events=recorder)
            key = (ds.name, quantizer.n_codewords)
            if self.references and key not in self._references_done and quantizer.n_codewords & (quantizer.n_codewords - 1) == 0:
                self._say(f"{verb}; training faiss PQ/OPQ reference curves…")
                subspaces = self.references if isinstance(self.references, dict) else DASHBOARD_REFERENCES
                self.recall.add_rows(reference_rows(ds, gt, quantizer.n_codewords, subspaces))
                self._references_done.add(key)
        except Exception as exc:
            self._show_error(exc)
            if reraise:
                raise
            return
        mp = "" if row["map"] is None else f", mAP {row['map']:.3f}"
        self._say(f"{verb} ({quantizer.fit_seconds_:.1f} s): distortion {row['distortion']:.3f}, "
                  f"1-recall@1/10 {row['recall_at']['1']:.3f}/{row['recall_at']['10']:.3f}{mp}. "
                  f"The model is dash.model.", done=True)

    def _step_status(self, event) -> None:
        if isinstance(event, Step):
            self._say(f"Training {self.method_w.value}: step {event.step}/{self._training.planned_steps or '?'}, "
                      f"loss {event.loss:.4g}, mean perplexity {float(np.mean(event.perplexity)):.1f}, "
                      f"{int(np.sum(event.dead_codes))} dead codewords")

    # ---------------------------------------------------------------- messages
    def _say(self, text: str, warn: bool = False, done: bool = False) -> None:
        color = "#b26a00" if warn else ("#1b5e20" if done else "inherit")
        self.status.value = f'<span style="color:{color}">{html.escape(text)}</span>'
        self.status_text = text

    def _show_error(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.errors.value = (f'<div style="color:#b00020"><b>Training failed — {html.escape(self.last_error)}</b>'
                             f"<details><summary>traceback</summary><pre>{html.escape(tb)}</pre></details></div>")
        self._say(f"Error: {self.last_error}", warn=True)

    # ---------------------------------------------------------------- layout
    def _layout(self):
        controls = ipw.VBox([
            ipw.HBox([self.method_w, self.data_w, self.m_w, self.k_w, self.steps_w]),
            self.knobs_box,
            ipw.HBox([self.start_w, self.stop_w]),
            self.status, self.errors,
        ])
        return ipw.VBox([controls, *self.run.panels(), _section("Recall vs bits", self.recall.widget)],
                        _dom_classes=["pqx-dashboard"])

    def snapshot(self, path=None, format: str = "png", **size):
        """Return static pictures of every view (:class:`widgets._view.Snapshots`, ``{name: Image}``;
        a notebook displays them one after another); ``path``: also write ``path/<name>.<format>``."""
        from ._view import snapshot_figures

        return snapshot_figures(self.figures, path, format, **size)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
