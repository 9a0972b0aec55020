"""Collapse monitor: perplexity and dead codes per subspace over steps, with the library's alarm.

Perplexity (exp of the usage entropy) is the number of equally used codewords that would give
the same spread: K for a perfectly used codebook, 1 when one codeword takes everything. The
alarm is :func:`explorer.diagnostics.detect_collapse` run on the newest step's usage, and says
which subspaces are collapsed, since which step (the start of the current collapsed streak),
and why (the detector's reason sentence).
"""
from __future__ import annotations

import html

import ipywidgets as ipw
import numpy as np
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from explorer.diagnostics import detect_collapse

from ._view import View, wire_array


class CollapseView(View):
    """Traces ``m`` are subspace m's perplexity, traces ``M + m`` its dead-code count, over steps.

    n_distinct: optional (M,) number of distinct training sub-vectors per subspace, passed to
    the detector so a subspace whose data cannot fill K codewords is not called collapsed.
    """

    title = "Collapse monitor"

    def __init__(self, n_subspaces: int = 8, *, n_distinct=None):
        super().__init__()
        self.n_distinct = self._given_n_distinct = n_distinct
        self.alarm = ipw.HTML(_dom_classes=["pqx-alarm"])
        self._reset(n_subspaces)
        self._build(n_subspaces)

    def _reset(self, M: int) -> None:
        self.steps: list[int] = []
        self.perplexity: list[np.ndarray] = []
        self.dead_codes: list[np.ndarray] = []
        self.verdicts = []
        self.since = [None] * M
        self.alarm_text = "No training step yet."
        self.alarm.value = html.escape(self.alarm_text)

    def _build(self, M: int) -> None:
        grid = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                             subplot_titles=["perplexity (codewords in effective use)", "dead codewords"])
        colors = qualitative.Plotly
        for kind, row in (("perplexity", 1), ("dead", 2)):
            for m in range(M):
                grid.add_scatter(x=[], y=[], mode="lines", name=f"subspace {m}", legendgroup=str(m),
                                 showlegend=row == 1, line_color=colors[m % len(colors)], row=row, col=1)
        grid.update_layout(height=460, width=440, margin=dict(l=45, r=10, t=40, b=40), legend=dict(orientation="h", y=-0.15, font_size=10))
        grid.update_xaxes(title_text="step", row=2, col=1)
        with self.figure.batch_update():
            self.figure.data = ()
            self.figure.layout = grid.layout
            self.figure.add_traces(grid.data)
        self._M = M

    def on_started(self, event) -> None:
        usable = getattr(event, "usable_codewords", None)
        # codes that follow the classes are judged against the class count, not K
        self.n_distinct = np.full(event.n_subspaces, usable) if usable else self._given_n_distinct
        self._reset(event.n_subspaces)
        if self._M != event.n_subspaces:
            self._build(event.n_subspaces)

    def on_step(self, event) -> None:
        usage = np.asarray(event.usage)
        self.steps.append(int(event.step))
        self.perplexity.append(np.asarray(event.perplexity, dtype=float))
        self.dead_codes.append(np.asarray(event.dead_codes, dtype=int))
        n_distinct = self.n_distinct if self.n_distinct is not None and len(self.n_distinct) == len(usage) else None
        self.verdicts = detect_collapse(usage, n_distinct=n_distinct)
        if len(self.since) != len(usage):
            self.since = [None] * len(usage)
        for v in self.verdicts:
            if not v.collapsed:
                self.since[v.subspace] = None
            elif self.since[v.subspace] is None:
                self.since[v.subspace] = int(event.step)
        self.alarm_text = self.describe(int(event.step))

    def describe(self, step: int) -> str:
        """The alarm as plain text: collapsed subspaces with since-when and why, or all clear."""
        bad = [v for v in self.verdicts if v.collapsed]
        if not bad:
            low = min(self.verdicts, key=lambda v: v.perplexity)
            return (f"No collapse at step {step}: all {len(self.verdicts)} subspaces healthy "
                    f"(lowest: subspace {low.subspace}, {low.reason}).")
        lines = [f"COLLAPSE at step {step}: {len(bad)} of {len(self.verdicts)} subspaces."]
        lines += [f"subspace {v.subspace} since step {self.since[v.subspace]}: {v.reason}" for v in bad]
        return "\n".join(lines)

    def _draw(self) -> None:
        if not self.steps:
            return
        P = np.stack(self.perplexity)  # (steps, M)
        D = np.stack(self.dead_codes)
        M = P.shape[1]
        if self._M != M:
            self._build(M)
        # int32/float64 arrays, not lists: plotly validates a list element by element in Python,
        # and the history grows with every step (2M traces of it per pass); see wire_array
        steps = wire_array(self.steps)
        for m in range(M):
            self.figure.data[m].x = steps
            self.figure.data[m].y = wire_array(P[:, m])
            self.figure.data[M + m].x = steps
            self.figure.data[M + m].y = wire_array(D[:, m])
        bad = any(v.collapsed for v in self.verdicts)
        color = "#b00020" if bad else "#1b5e20"
        lines = self.alarm_text.split("\n")
        body = "<br>".join(html.escape(line) for line in lines)
        self.alarm.value = f'<div style="color:{color};font-weight:{600 if bad else 400}">{body}</div>'

    @property
    def widget(self):
        return ipw.VBox([self.alarm, self.figure], _dom_classes=["pqx-collapse"])
