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

from explorer.diagnostics import collapsed_mask, detect_collapse

from ._view import View, _frozen


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
        self.since = [None] * M
        self._newest = None  # (step, usage, n_distinct) of the newest step
        self._alarm = None  # (_newest, verdicts, text): the alarm of _newest, made on first read
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
        # called in the training thread for every step: the collapsed flags only (vectorised);
        # the verdicts' reason sentences are made for the newest step when read (a redraw)
        usage = np.asarray(event.usage)
        ppl, dead = np.asarray(event.perplexity, dtype=float), np.asarray(event.dead_codes, dtype=int)
        self.steps.append(int(event.step))
        self.perplexity.append(ppl)
        self.dead_codes.append(dead)
        n_distinct = self.n_distinct if self.n_distinct is not None and len(self.n_distinct) == len(usage) else None
        flags = collapsed_mask(usage, n_distinct=n_distinct, perplexity=ppl, dead=dead)
        if len(self.since) != len(usage):
            self.since = [None] * len(usage)
        for m, collapsed in enumerate(flags):
            if not collapsed:
                self.since[m] = None
            elif self.since[m] is None:
                self.since[m] = int(event.step)
        self._newest = (int(event.step), usage, n_distinct)

    def _verdicts_and_text(self) -> tuple[list, str]:
        with self._lock:
            if self._newest is None:
                return [], "No training step yet."
            if self._alarm is None or self._alarm[0] is not self._newest:
                step, usage, n_distinct = self._newest
                verdicts = detect_collapse(usage, n_distinct=n_distinct)
                self._alarm = (self._newest, verdicts, self.describe(step, verdicts))
            return self._alarm[1], self._alarm[2]

    @property
    def verdicts(self) -> list:
        """:func:`~explorer.diagnostics.detect_collapse`'s verdicts on the newest step ([] before one)."""
        return self._verdicts_and_text()[0]

    @property
    def alarm_text(self) -> str:
        """The alarm of the newest step as plain text (see :meth:`describe`)."""
        return self._verdicts_and_text()[1]

    def describe(self, step: int, verdicts: list | None = None) -> str:
        """The alarm as plain text: collapsed subspaces with since-when and why, or all clear.
        ``verdicts``: those of ``step`` (default: the newest step's)."""
        verdicts = self.verdicts if verdicts is None else verdicts
        bad = [v for v in verdicts if v.collapsed]
        if not bad:
            low = min(verdicts, key=lambda v: v.perplexity)
            return (f"No collapse at step {step}: all {len(verdicts)} subspaces healthy "
                    f"(lowest: subspace {low.subspace}, {low.reason}).")
        lines = [f"COLLAPSE at step {step}: {len(bad)} of {len(verdicts)} subspaces."]
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
        # arrays, not lists, through _restyle: the history grows with every step (2M traces of it
        # per pass), and a list goes element by element; see wire_array and View._restyle
        steps = _frozen(np.asarray(self.steps))
        for m in range(M):
            self._restyle(m, {"x": steps, "y": P[:, m]})
            self._restyle(M + m, {"x": steps, "y": D[:, m]})
        verdicts, text = self._verdicts_and_text()
        bad = any(v.collapsed for v in verdicts)
        color = "#b00020" if bad else "#1b5e20"
        lines = text.split("\n")
        body = "<br>".join(html.escape(line) for line in lines)
        self.alarm.value = f'<div style="color:{color};font-weight:{600 if bad else 400}">{body}</div>'

    @property
    def widget(self):
        return ipw.VBox([self.alarm, self.figure], _dom_classes=["pqx-collapse"])
