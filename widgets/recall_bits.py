"""Recall vs bits: one curve per method of a search-quality measure against code length.

Each point is one *result row*, the same record the sweep streams::

    {"method": "pq", "bits": 64, "subspaces": 8, "codewords": 256,
     "recall_at": {"1": 0.41, "10": 0.93, "100": 1.0}, "map": 0.52 or None, "reference": False}

``recall_at[R]`` is 1-recall@R (the fraction of queries whose exact nearest neighbour is in the
first R results of ADC search); ``map`` is mean average precision with class labels as relevance
(None without labels). Reference rows (faiss's own quantizers on the same data, named as the sweep
names them: ``faiss-pq``, ``faiss-opq``, … with ``"reference": True``) are drawn dashed.
"""
from __future__ import annotations

import ipywidgets as ipw
from plotly.colors import qualitative

from ._view import View

REQUIRED = ("method", "bits", "subspaces", "codewords", "recall_at", "map", "reference")
MEASURES = {"1-recall@1": "1", "1-recall@10": "10", "1-recall@100": "100", "mAP": "map"}


def row_value(row: dict, measure: str):
    """The value of ``measure`` ("1", "10", "100" or "map") in a result row, or None."""
    if measure == "map":
        return row.get("map")
    return (row.get("recall_at") or {}).get(measure)


class RecallBitsView(View):
    """One line+marker trace per (method, reference) key, points sorted by bits."""

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

    def add_row(self, row: dict) -> None:
        """Add one result row (see the module docstring) and redraw its curve."""
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise ValueError(f"result row lacks {', '.join(missing)}; a row needs {', '.join(REQUIRED)}")
        with self._lock:
            self.rows.append(dict(row))
        self.redraw()

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
                                        marker=dict(symbol="circle-open" if ref else "circle", size=8))
        for trace, (method, ref) in zip(self.figure.data, self.keys):
            trace.x, trace.y = self.curve(method, ref)
        label = self.measure.value
        self.figure.layout.yaxis.title.text = label
        has_values = any(row_value(r, MEASURES[label]) is not None for r in self.rows)
        self.figure.layout.title.text = (f"{label} against code length" if has_values or not self.rows
                                         else f"{label}: no values (the data have no labels)")

    @property
    def widget(self):
        return ipw.VBox([self.measure, self.figure], _dom_classes=["pqx-recall"])
