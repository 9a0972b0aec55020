"""Loss curves: every loss term the method reports in ``Step.losses``, one line each, over steps.

``"total"`` is the objective being minimised (PQ: the k-means distortion; OPQ: the distortion
after the round's rotation update); deep methods add their own named terms. Terms of very
different sizes share the plot, so the y axis is logarithmic when every value is positive.
"""
from __future__ import annotations

from ._view import View


class LossView(View):
    """One scatter trace per loss term, named after it, in the order the terms first appear."""

    title = "Loss curves"

    def __init__(self):
        super().__init__()
        self.figure.update_layout(height=300, width=440, margin=dict(l=50, r=10, t=40, b=40), title_text="Loss terms",
                                  title_font_size=14, xaxis_title="step", yaxis_type="log")
        self._reset()

    def _reset(self) -> None:
        self.steps: list[int] = []
        self.terms: dict[str, list[float | None]] = {}

    def on_started(self, event) -> None:
        self._reset()

    def on_step(self, event) -> None:
        for name in event.losses:
            if name not in self.terms:
                self.terms[name] = [None] * len(self.steps)
        self.steps.append(int(event.step))
        for name, values in self.terms.items():
            values.append(float(event.losses[name]) if name in event.losses else None)

    def _draw(self) -> None:
        names = list(self.terms)
        if [t.name for t in self.figure.data] != names:
            self.figure.data = ()
            for name in names:
                self.figure.add_scatter(x=[], y=[], mode="lines", name=name)
        for i, name in enumerate(names):
            self._restyle(i, {"x": self.steps, "y": self.terms[name]})  # a missing value (None) is a gap
        positive = all(v is None or v > 0 for vals in self.terms.values() for v in vals)
        self._relayout({"yaxis.type": "log" if positive else "linear"})
