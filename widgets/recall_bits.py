"""Recall vs bits: one curve per method of a search-quality measure against code length.

Each point is one *result row*, the same record the sweep streams::

    {"method": "pq", "bits": 64, "subspaces": 8, "codewords": 256,
     "recall_at": {"1": 0.41, "10": 0.93, "100": 1.0}, "map": 0.52 or None, "reference": False}

``recall_at[R]`` is 1-recall@R (the fraction of queries whose exact nearest neighbour is in the
first R results of ADC search); ``map`` is mean average precision with class labels as relevance
(None without labels). Reference rows (faiss's own quantizers on the same data, named as the sweep
names them: ``faiss-pq``, ``faiss-opq``, … with ``"reference": True``) are drawn dashed.

Opening a run: the view keeps, per (method, bits) of our rows, the run's recorded training events
(an :class:`explorer.events.Recorder` — bounded — or a list of events). Clicking one of our points,
or calling ``view.open_run(method, bits)``, replays them into a codeword-usage view and a
collapse monitor shown below the plot. The view is itself a sweep callback:
``sweep(ds, ..., callbacks=[view], record_steps=50)`` adds each row with its recorder as it finishes.
"""
from __future__ import annotations

import html

import ipywidgets as ipw
from plotly.colors import qualitative

from explorer.events import Recorder
from explorer.sweep import SweepRow

from ._view import View

REQUIRED = ("method", "bits", "subspaces", "codewords", "recall_at", "map", "reference")
MEASURES = {"1-recall@1": "1", "1-recall@10": "10", "1-recall@100": "100", "mAP": "map"}


def row_value(row: dict, measure: str):
    """The value of ``measure`` ("1", "10", "100" or "map") in a result row, or None."""
    if measure == "map":
        return row.get("map")
    return (row.get("recall_at") or {}).get(measure)


class RecallBitsView(View):
    """One line+marker trace per (method, reference) key, points sorted by bits.

    ``runs``: recorded events per (method, bits) of our rows (the latest run wins);
    ``opened``: the (method, bits) whose usage and collapse views are shown, or None.
    """

    title = "Recall vs bits"

    def __init__(self, measure: str = "1-recall@1"):
        super().__init__()
        self.rows: list[dict] = []
        self.measure = ipw.Dropdown(options=list(MEASURES), value=measure, description="measure",
                                    layout=ipw.Layout(width="240px"))
        self.measure.observe(lambda change: self.redraw(), names="value")
        self.figure.update_layout(height=340, width=700, margin=dict(l=50, r=10, t=40, b=40), title_font_size=14,
                                  xaxis=dict(title="code length (bits)", type="log", dtick=0.30103),
                                  yaxis=dict(title="1-recall@1", range=[0, 1.02]))
        self.keys: list[tuple[str, bool]] = []
        self.runs: dict[tuple[str, int], Recorder | list] = {}
        self.opened: tuple[str, int] | None = None
        self.usage = self.collapse = None  # built at the first open_run, then reused for every run
        self.run_title = ipw.HTML("Click one of our points to open that run's codeword usage and collapse views.")
        self.run_box = ipw.VBox([self.run_title], _dom_classes=["pqx-recall-run"])

    def _keep(self, row: dict, events=None) -> None:
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise ValueError(f"result row lacks {', '.join(missing)}; a row needs {', '.join(REQUIRED)}")
        with self._lock:
            self.rows.append(dict(row))
            if events is not None and not row["reference"]:
                self.runs[(row["method"], int(row["bits"]))] = events

    def add_row(self, row: dict, events: Recorder | list | None = None) -> None:
        """Add one result row (see the module docstring) and redraw its curve.

        events: that run's training events (a :class:`~explorer.events.Recorder` or a list),
        kept so that :meth:`open_run` (or a click on the point) can show its usage and collapse.
        """
        self._keep(row, events)
        self.redraw()

    def observe(self, event) -> None:
        """A :class:`explorer.sweep.SweepRow` adds its row and recorded events (no drawing)."""
        if isinstance(event, SweepRow):
            self._keep(event.row, event.events)
        else:
            super().observe(event)

    def open_run(self, method: str, bits: int):
        """(UsageView, CollapseView) holding the run (method, bits) replayed from its recorded
        events, also shown below the plot. Raises ValueError naming method and bits when no run
        with recorded events matches."""
        from .collapse import CollapseView
        from .usage import UsageView

        key = (method, int(bits))
        with self._lock:
            events = self.runs.get(key)
            row = next((r for r in reversed(self.rows) if (r["method"], r["bits"]) == key and not r["reference"]), None)
        if events is None:
            known = ", ".join(f"{m} at {b} bits" for m, b in self.runs) or "none"
            raise ValueError(f"no recorded run of method={method!r} at bits={bits} (runs with events: {known}); "
                             "record runs with sweep(..., record_steps=50) or add_row(row, events=recorder)")
        M, K = int(row["subspaces"]), int(row["codewords"])
        if self.usage is None:
            self.usage, self.collapse = UsageView(M, K), CollapseView(M)
            self._run_widgets = (self.usage.widget, self.collapse.widget)
        self.usage.replay(events)
        self.collapse.replay(events)
        self.opened = key
        self.run_title.value = (f"<b>{html.escape(method)}, {int(bits)} bits</b> (M={M}, K={K}): codeword usage at its "
                                f"last recorded step ({self.usage.step}) and collapse over its steps")
        self.run_box.children = [self.run_title, *self._run_widgets]
        return self.usage, self.collapse

    def _on_click(self, trace, points, state=None) -> None:
        """Plotly click on one of our traces: open the clicked run (a message instead when it has no events)."""
        if not points.point_inds:
            return
        method, reference = self.keys[points.trace_index]
        if reference:
            return
        try:
            self.open_run(method, trace.x[points.point_inds[0]])
        except ValueError as exc:
            self.run_title.value = html.escape(str(exc))

    def add_rows(self, rows) -> None:
        """Add several result rows, then redraw once."""
        for row in rows:
            missing = [k for k in REQUIRED if k not in row]
            if missing:
                raise ValueError(f"result row lacks {', '.join(missing)}; a row needs {', '.join(REQUIRED)}")
        with self._lock:
            self.rows.extend(dict(r) for r in rows)
        self.redraw()

    def curve(self, method: str, reference: bool = False) -> tuple[list, list]:
        """(bits, values) of one curve for the chosen measure, sorted by bits (rows without a value skipped)."""
        key = MEASURES[self.measure.value]
        pts = sorted((r["bits"], row_value(r, key)) for r in self.rows
                     if r["method"] == method and bool(r["reference"]) == reference and row_value(r, key) is not None)
        return [p[0] for p in pts], [p[1] for p in pts]

    def _draw(self) -> None:
        keys = []
        for r in self.rows:
            k = (r["method"], bool(r["reference"]))
            if k not in keys:
                keys.append(k)
        colors = qualitative.D3
        for i, (method, ref) in enumerate(keys):
            if (method, ref) not in self.keys:
                self.keys.append((method, ref))
                self.figure.add_scatter(x=[], y=[], mode="lines+markers",
                                        name=f"{method} (reference)" if ref else method,
                                        line=dict(dash="dash" if ref else "solid",
                                                  color=colors[len(self.keys) % len(colors)]),
                                        marker=dict(symbol="circle-open" if ref else "circle", size=8),
                                        hovertemplate=None if ref else
                                        "%{x} bits: %{y:.3f}<br>click: open this run<extra>" + method + "</extra>")
                if not ref:
                    self.figure.data[-1].on_click(self._on_click)
        for trace, (method, ref) in zip(self.figure.data, self.keys):
            trace.x, trace.y = self.curve(method, ref)
        label = self.measure.value
        self.figure.layout.yaxis.title.text = label
        has_values = any(row_value(r, MEASURES[label]) is not None for r in self.rows)
        self.figure.layout.title.text = (f"{label} against code length" if has_values or not self.rows
                                         else f"{label}: no values (the data have no labels)")

    @property
    def widget(self):
        return ipw.VBox([self.measure, self.figure, self.run_box], _dom_classes=["pqx-recall"])
