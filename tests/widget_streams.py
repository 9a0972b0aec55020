"""Recorded event streams from real small fits, shared by the widget tests (computed once)."""
from __future__ import annotations

import functools

from explorer import data, methods
from explorer.events import FitStarted, Step


class ListRecorder(list):
    """Every event, in order; asks for embedding samples every ``sample_every`` steps."""

    def __init__(self, sample_every: int = 0):
        super().__init__()
        self.sample_every = sample_every

    def __call__(self, event):
        self.append(event)


@functools.lru_cache(maxsize=None)
def digits():
    return data.split_queries(data.load("digits"), 100, random_state=0)


@functools.lru_cache(maxsize=None)
def stream(method: str = "pq", sample_every: int = 0, **params) -> tuple:
    """The events of ``method`` fitted on digits (M=4, K=16 unless overridden)."""
    params = {"n_subspaces": 4, "n_codewords": 16, **params}
    rec = ListRecorder(sample_every)
    methods.create(method, **params).fit(digits().base, callbacks=[rec])
    return tuple(rec)


def steps(events) -> list[Step]:
    return [e for e in events if isinstance(e, Step)]


def started(events) -> FitStarted:
    return next(e for e in events if isinstance(e, FitStarted))
