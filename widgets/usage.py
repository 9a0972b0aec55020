"""Codeword usage: one bar histogram per subspace (small multiples), dead codes marked.

Bars are the ``Step.usage`` counts (M, K): how many training vectors each codeword received at
that step. A healthy codebook spreads vectors over many codewords; a collapsing one piles them
onto a few, and the rest go *dead* (zero usage, marked with a red ✕ on the axis). "sorted"
orders each subspace's codewords by usage, which turns the histogram into a rank plot where
collapse is a cliff.
"""
from __future__ import annotations

import ipywidgets as ipw
import numpy as np
from plotly.subplots import make_subplots

from explorer.events import FitStarted

from ._view import View

COLUMNS = 4


class UsageView(View):
    """Usage histograms: trace ``2m`` is subspace m's bars, trace ``2m+1`` its dead-code marks."""

    title = "Codeword usage"

    def __init__(self, n_subspaces: int = 8, n_codewords: int = 256, *, sorted: bool = False):
        super().__init__()
        self.usage: np.ndarray | None = None
        self.step = 0
        self.sorted = ipw.Checkbox(value=sorted, description="sorted by usage", indent=False)
        self.sorted.observe(lambda change: self.redraw(), names="value")
        self._shape = (0, 0)
        self._build(n_subspaces, n_codewords)

    def _build(self, M: int, K: int) -> None:
        """(Re)lay out M subplots for K codewords in the same FigureWidget."""
        rows = -(-M // COLUMNS)
        cols = min(M, COLUMNS)
        grid = make_subplots(rows=rows, cols=cols, subplot_titles=[f"subspace {m}" for m in range(M)],
                             horizontal_spacing=0.04, vertical_spacing=0.12 if rows > 1 else 0.1)
        for m in range(M):
            r, c = m // COLUMNS + 1, m % COLUMNS + 1
            grid.add_bar(x=list(range(K)), y=[0] * K, marker_color="#3b6ea8", marker_line_width=0,
                         name=f"subspace {m}", showlegend=False, row=r, col=c,
                         hovertemplate="codeword %{customdata}<br>%{y} vectors<extra></extra>",
                         customdata=list(range(K)))
            grid.add_scatter(x=[], y=[], mode="markers", marker=dict(symbol="x", color="#d62728", size=5),
                             name="dead", showlegend=False, row=r, col=c, hoverinfo="skip")
        grid.update_layout(height=170 * rows + 70, width=860, margin=dict(l=40, r=10, t=50, b=30), bargap=0,
                           title=dict(text="Codeword usage per subspace (✕ = dead codeword)", font_size=14))
        grid.update_xaxes(showticklabels=False, range=[-0.5, K - 0.5])
        with self.figure.batch_update():
            self.figure.data = ()
            self.figure.layout = grid.layout
            self.figure.add_traces(grid.data)
        self._shape = (M, K)
        self._ids_ordered = False
        self._drawn_dead: list = [None] * M  # per subspace, the dead positions last sent to the page

    def on_started(self, event: FitStarted) -> None:
        self.usage = None
        self.step = 0
        if self._shape != (event.n_subspaces, event.n_codewords):
            self._build(event.n_subspaces, event.n_codewords)

    def on_step(self, event) -> None:
        self.usage = np.asarray(event.usage)
        self.step = event.step

    def bars(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """(heights (K,), codeword ids (K,)) drawn for subspace m, in display order."""
        u = self.usage[m]
        order = np.argsort(-u, kind="stable") if self.sorted.value else np.arange(len(u))
        return u[order], order

    def _draw(self) -> None:
        if self.usage is None:
            return
        M, K = self.usage.shape
        if self._shape != (M, K):
            self._build(M, K)
        ordered = bool(self.sorted.value)
        for m in range(M):
            heights, ids = self.bars(m)
            dead = np.flatnonzero(heights == 0)
            # through _restyle: int32 buffers (plotly sends int64 arrays, numpy's counts and ids, as
            # lists) and no per-property validation (see View._restyle)
            bars = {"y": heights}
            if ordered or self._ids_ordered:  # unsorted ids are 0..K-1 as built: resent only when they change
                bars["customdata"] = ids
            self._restyle(2 * m, bars)
            # dead markers and the subplot title change rarely once training settles: they are
            # sent only when they change, keeping the message small
            if self._drawn_dead[m] is None or not np.array_equal(self._drawn_dead[m], dead):
                self._restyle(2 * m + 1, {"x": dead, "y": np.zeros(len(dead))})
                self._relayout({f"annotations[{m}].text": f"subspace {m} · {len(dead)} dead"})
                self._drawn_dead[m] = dead
        self._ids_ordered = ordered
        self._relayout({"title.text": f"Codeword usage per subspace at step {self.step} (✕ = dead codeword)"})

    @property
    def widget(self):
        return ipw.VBox([self.sorted, self.figure], _dom_classes=["pqx-usage"])
