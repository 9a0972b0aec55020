"""Subspace embedding: a 2-D t-SNE or UMAP picture of one subspace's sub-vectors, coloured by the
codeword each is assigned to, with the codewords in use overlaid (black ✕).

Input is a :class:`explorer.events.EmbeddingSample` (subvectors (M, s, ds), codes (s, M),
codebooks (M, K, ds)) that training builds only every ``sample_every`` steps, because this view
asks for it. t-SNE has no out-of-sample transform, so the sample's sub-vectors and the codewords
in use are embedded together; unused codewords are left out (they would crowd the picture and
t-SNE's cost grows with the point count). In the background (live dashboards) a thread hands
each projection to a worker process of its own at the lowest priority
(:class:`explorer.projection.ProjectionProcess`, shared by every view), at most once per
``interval`` seconds, so training does not slow down for it; the last picture stays up while the
next one computes. UMAP (umap-learn) is imported only when chosen: its first import takes about
ten seconds.
"""
from __future__ import annotations

import html
import threading
import time

import ipywidgets as ipw
import numpy as np

from explorer.projection import ALGORITHMS, project, shared_process

from ._view import View


class EmbeddingView(View):
    """Trace 0: the sample's sub-vectors (colour = codeword); trace 1: codewords in use.

    sample_every: steps between samples requested from training. interval: seconds at least
    between two projections. background: project in a low-priority worker process, waited for
    in a thread (live dashboards), or in the caller's thread (notebooks under nbval, tests:
    deterministic).
    """

    title = "Subspace embedding"

    def __init__(self, *, subspace: int = 0, algorithm: str = "t-SNE", sample_every: int = 5,
                 interval: float = 2.0, background: bool = True):
        super().__init__()
        self.sample_every = int(sample_every)
        self.interval = float(interval)
        self.background = background
        self.subspace = ipw.Dropdown(options=list(range(8)), value=subspace, description="subspace",
                                     layout=ipw.Layout(width="160px"))
        self.algorithm = ipw.ToggleButtons(options=ALGORITHMS, value=algorithm, style={"button_width": "70px"})
        self.caption = ipw.HTML("No sample yet: the picture appears after the first sampled step.")
        self.figure.add_scatter(x=[], y=[], mode="markers", name="sub-vectors",
                                marker=dict(size=5, colorscale="Turbo", showscale=False, opacity=0.8),
                                hovertemplate="codeword %{marker.color}<extra></extra>")
        self.figure.add_scatter(x=[], y=[], mode="markers", name="codewords",
                                marker=dict(symbol="x-thin", size=6, line=dict(width=1.5, color="rgba(0,0,0,0.75)")),
                                hovertemplate="codeword %{text}<extra></extra>", text=[])
        self.figure.update_layout(height=380, width=440, margin=dict(l=30, r=10, t=40, b=30), title_font_size=14,
                                  title_text="Subspace embedding", legend=dict(orientation="h", y=-0.08),
                                  xaxis=dict(showticklabels=False), yaxis=dict(showticklabels=False))
        self.subspace.observe(lambda change: self.refresh(), names="value")
        self.algorithm.observe(lambda change: self.refresh(), names="value")
        self.sample = None          # newest EmbeddingSample
        self.sample_step = None     # its step
        self.picture = None         # dict of the drawn projection (kept while the next computes)
        self._worker: threading.Thread | None = None
        self._final = self._final_seen = self._pending_final = False
        self._run = 0  # runs started; a picture belongs to one run
        self._busy = False
        self._last_start = -float("inf")
        self.error = None

    # ---------------------------------------------------------------- events
    def on_started(self, event) -> None:
        M = event.n_subspaces
        if list(self.subspace.options) != list(range(M)):
            value = self.subspace.value if self.subspace.value < M else 0
            self.subspace.options = list(range(M))
            self.subspace.value = value
        self.sample = None
        self.sample_step = None
        self._run += 1

    def on_step(self, event) -> None:
        if event.sample is not None:
            self.sample = event.sample
            self.sample_step = int(event.step)

    def on_finished(self, event) -> None:
        self._final = True

    def redraw(self, live: bool = False) -> bool:
        """Start a projection of the newest sample when due (throttled), and draw the last picture."""
        final, self._final = self._final, False
        self._final_seen = final
        due = time.monotonic() - self._last_start >= self.interval
        if self.sample is not None and (due or final) and self._is_new():
            self._launch(wait=final)
        return super().redraw(live=live)

    def refresh(self) -> None:
        """Recompute now from the newest sample (after the subspace or algorithm changed)."""
        if self.sample is not None:
            self._launch()
            super().redraw()

    def _is_new(self) -> bool:
        p = self.picture
        return p is None or (p["run"], p["step"], p["subspace"], p["algorithm"]) != (
            self._run, self.sample_step, self.subspace.value, self.algorithm.value)

    def _launch(self, wait: bool = False) -> None:
        if self._worker is not None and self._worker.is_alive():
            # The running projection finishes first; the next redraw picks up the newest sample,
            # and a final one (training ended) is started as soon as the worker is done.
            self._pending_final = self._pending_final or wait or self._final_seen
            return
        self._last_start = time.monotonic()
        job = (self.sample, self._run, self.sample_step, int(self.subspace.value), self.algorithm.value)
        if not self.background:
            self._compute(*job)
            return
        self.caption.value = self.caption.value.split(" — ")[0] + " — computing…"
        self._busy = True
        self._worker = threading.Thread(target=self._compute_and_draw, args=job, daemon=True)
        self._worker.start()

    def _compute_and_draw(self, *job) -> None:
        self._compute(*job)
        self._busy = False
        super().redraw()
        if self._pending_final and self._is_new():
            self._pending_final = False
            self._worker = None
            self._launch()

    def _compute(self, sample, run, step, m, algorithm) -> None:
        try:
            pts = np.asarray(sample.subvectors[m])
            codes = np.asarray(sample.codes)[:, m]
            used = np.unique(codes)
            cw = np.asarray(sample.codebooks[m])[used]
            points = np.vstack([pts, cw])
            xy = shared_process().project(points, algorithm) if self.background else project(points, algorithm)
            self.picture = {"run": run, "step": step, "subspace": m, "algorithm": algorithm, "points": xy[:len(pts)],
                            "codes": codes, "codewords": xy[len(pts):], "used": used}
            self.error = None
        except Exception as exc:  # shown in the caption; the last picture stays
            self.error = f"{type(exc).__name__}: {exc}"

    def wait(self, timeout: float | None = None) -> None:
        """Block until a background projection in flight has finished (tests, notebooks)."""
        while self._worker is not None and self._worker.is_alive():  # a final projection may chain one more
            self._worker.join(timeout)
            if timeout is not None:
                break

    # ---------------------------------------------------------------- drawing
    def _draw(self) -> None:
        p = self.picture
        if self.error:
            self.caption.value = f'<span style="color:#b00020">{html.escape(self.error)}</span>'
        if p is None:
            return
        self._restyle(0, {"x": p["points"][:, 0], "y": p["points"][:, 1], "marker.color": p["codes"]})
        self._restyle(1, {"x": p["codewords"][:, 0], "y": p["codewords"][:, 1], "text": p["used"]})
        self._relayout({"title.text": f"{p['algorithm']} of subspace {p['subspace']} at step {p['step']}"})
        if not self.error:
            busy = " — computing…" if self._busy else ""
            self.caption.value = (f"{p['algorithm']} of subspace {p['subspace']}: {len(p['codes'])} sub-vectors "
                                  f"sampled at step {p['step']}, {len(p['used'])} codewords in use{busy}")

    @property
    def widget(self):
        return ipw.VBox([ipw.HBox([self.subspace, self.algorithm]), self.caption, self.figure],
                        _dom_classes=["pqx-embedding"])
