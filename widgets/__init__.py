"""Jupyter views of PQ Explorer: ipywidgets + plotly, driven by :mod:`explorer.events`.

One file per view (usage, collapse, soft_hard, embedding, recall_bits, losses), each owning one
plotly ``FigureWidget``; :class:`RunView` composes the views of one run (live, or followed
through an event log written by another process); :class:`Dashboard` is a RunView plus controls,
Start / Stop and the recall-vs-bits view.
"""
from ._view import watch
from .collapse import CollapseView
from .dashboard import Dashboard
from .embedding import EmbeddingView
from .losses import LossView
from .recall_bits import RecallBitsView
from .run_view import RunView
from .soft_hard import SoftHardView
from .usage import UsageView

__all__ = ["Dashboard", "RunView", "UsageView", "CollapseView", "SoftHardView", "EmbeddingView", "RecallBitsView", "LossView",
           "watch"]
