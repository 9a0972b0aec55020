"""PQ Explorer's backing library: quantizers that emit live training events, data, metrics.

Never imports ipywidgets, plotly or Jupyter: the views in ``widgets`` subscribe to events.

Typical use::

    from explorer import data, methods
    ds = data.split_queries(data.load("digits"))
    pq = methods.create("pq", n_subspaces=8, n_codewords=256).fit(ds.base, callbacks=[print])
    codes = pq.encode(ds.base)
    pq.save("model.pqx"); same = explorer.load("model.pqx")   # any method; never unpickles

``explorer.load`` loads a saved *model*; datasets load with ``explorer.data.load`` (or
:func:`explorer.data.as_dataset`).
"""
from . import data, diagnostics, events, methods, metrics, search
from .data import Dataset, split_queries
from .errors import DataFileError, InvalidParameter, InvalidType, PQXError
from .events import STOP, Recorder, StopSignal, Throttle
from .methods import Quantizer, available, create
from .inspect import inspect_faiss
from .persist import load_model as load

__version__ = "0.1.0"
__all__ = ["data", "diagnostics", "events", "methods", "metrics", "search", "Dataset", "load", "split_queries",
           "PQXError", "InvalidParameter", "InvalidType", "DataFileError", "Recorder", "StopSignal", "Throttle",
           "STOP", "Quantizer", "available", "create", "inspect_faiss"]
