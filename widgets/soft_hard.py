"""Soft vs hard codes: for methods that train with soft assignments (a softmax over codewords),
the gap between the soft reconstruction Σ_k p_k c_k and the hard one (the argmax codeword), and
how often argmax(p) equals the hard code, over steps.

A shrinking gap and agreement near 1 mean training converges to what search will actually use.
Methods whose class says ``has_soft_codes = False`` (PQ, OPQ: the encoder is already a hard
nearest-codeword choice) have nothing to plot; the view says so instead of showing empty axes.
"""
from __future__ import annotations

import html

import ipywidgets as ipw

from explorer import methods

from ._view import View


def _has_soft_codes(method: str) -> bool | None:
    """Whether a built-in method has soft codes; None for a run of another trainer (a monitor's)."""
    try:
        return bool(methods.get(method).has_soft_codes)
    except ValueError:
        return None


class SoftHardView(View):
    """Trace 0: gap (left axis); trace 1: argmax agreement (right axis, 0–1)."""

    title = "Soft vs hard"

    def __init__(self):
        super().__init__()
        self.figure.add_scatter(x=[], y=[], mode="lines", name="gap ‖soft − hard‖²")
        self.figure.add_scatter(x=[], y=[], mode="lines", name="argmax agreement", yaxis="y2")
        self.figure.update_layout(height=300, width=440, margin=dict(l=50, r=50, t=40, b=40), title_font_size=14,
                                  title_text="Soft vs hard reconstruction", xaxis_title="step",
                                  yaxis_title="gap", legend=dict(orientation="h", y=-0.3),
                                  yaxis2=dict(title="agreement", overlaying="y", side="right", range=[0, 1.02]))
        self.message = ipw.HTML(_dom_classes=["pqx-soft-hard-message"])
        self._box = ipw.Box([self.figure])
        self.method = None
        self.has_soft_codes = True
        self._reset()

    def _reset(self) -> None:
        self.steps: list[int] = []
        self.gap: list[float] = []
        self.agreement: list[float] = []

    def on_started(self, event) -> None:
        self._reset()
        self.method = event.method
        self.has_soft_codes = _has_soft_codes(event.method)

    def on_step(self, event) -> None:
        if event.soft_hard:
            self.steps.append(int(event.step))
            self.gap.append(float(event.soft_hard.get("gap", float("nan"))))
            self.agreement.append(float(event.soft_hard.get("agreement", float("nan"))))

    @property
    def message_text(self) -> str:
        """Plain-text explanation shown instead of the plot for methods without soft codes ('' otherwise)."""
        if self.method is None or self.has_soft_codes or self.steps:
            return ""
        if self.has_soft_codes is None:
            return (f"Run {self.method!r} reports no soft codes yet: pass soft= (the code probabilities) to "
                    "CodebookMonitor.update to plot the soft-vs-hard gap.")
        soft = [name for name in methods.available() if _has_soft_codes(name)]
        others = f" Methods with soft codes: {', '.join(soft)}." if soft else ""
        return (f"{self.method!r} has no soft codes: it encodes by a hard nearest-codeword choice during "
                f"training too, so there is no soft-vs-hard gap to plot.{others}")

    def _draw(self) -> None:
        self._restyle(0, {"x": self.steps, "y": self.gap})
        self._restyle(1, {"x": self.steps, "y": self.agreement})
        text = self.message_text
        self.message.value = f"<i>{html.escape(text)}</i>" if text else ""
        self._box.layout.display = "none" if text else None

    @property
    def widget(self):
        return ipw.VBox([self.message, self._box], _dom_classes=["pqx-soft-hard"])
