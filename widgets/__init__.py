"""Jupyter views of PQ Explorer: ipywidgets + plotly, driven by :mod:`explorer.events`.

One file per view (usage, collapse, soft_hard, embedding, recall_bits, losses), each owning one
plotly ``FigureWidget``; :class:`Dashboard` composes them with controls and Start / Stop.
"""
from .collapse import CollapseView
from .dashboard import Dashboard, reference_rows, result_row
from .embedding import EmbeddingView
from .losses import LossView
from .recall_bits import RecallBitsView
from .soft_hard import SoftHardView
from .usage import UsageView

__all__ = ["Dashboard", "UsageView", "CollapseView", "SoftHardView", "EmbeddingView", "RecallBitsView", "LossView",
           "result_row", "reference_rows"]
