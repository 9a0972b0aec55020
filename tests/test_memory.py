"""Bounded memory: a long training run keeps the event history at the recorder's size, embedding
samples at ≤ 300 rows, and memory (measured with tracemalloc) flat from early on to the end."""
from __future__ import annotations

import tracemalloc

import numpy as np

from explorer import data, methods
from explorer.events import Recorder, Step
from explorer.methods.base import Quantizer


class CheapLoop(Quantizer):
    """A method whose step costs nothing, so 20,000 steps measure the event machinery alone."""

    name = "cheap-loop"

    def __init__(self, n_subspaces=4, n_codewords=16, *, n_iter=20_000, random_state=0, device="cpu"):
        super().__init__(n_subspaces, n_codewords, random_state=random_state, device=device)
        self.n_iter = n_iter

    def _fit(self, X, y, run):
        gen, rng = self._generators()
        self.codebooks_ = rng.standard_normal((self.n_subspaces, self.n_codewords, X.shape[1] // self.n_subspaces)).astype(np.float32)
        usage = rng.integers(0, 50, size=(self.n_subspaces, self.n_codewords))
        for step in range(1, self.n_iter + 1):
            if not run.step(step, {"total": 1.0 / step, "term": 0.5}, n_codewords=self.n_codewords, usage=usage,
                            soft_hard={"gap": 0.1, "agreement": 0.9}, sample=lambda: self._embedding_sample(X)):
                break


class MemoryProbe:
    """Callback noting traced memory (bytes) at chosen steps and the largest embedding sample seen."""

    sample_every = 10

    def __init__(self, at_steps):
        self.at_steps, self.memory, self.sample_rows = set(at_steps), {}, 0

    def __call__(self, event):
        if isinstance(event, Step):
            if event.sample is not None:
                self.sample_rows = max(self.sample_rows, event.sample.subvectors.shape[1])
            if event.step in self.at_steps:
                self.memory[event.step] = tracemalloc.get_traced_memory()[0]


def run_traced(quantizer, X, early, late, max_steps):
    recorder, probe = Recorder(max_steps=max_steps), MemoryProbe({early, late})
    tracemalloc.start()
    try:
        quantizer.fit(X, callbacks=[recorder, probe])
    finally:
        tracemalloc.stop()
    return recorder, probe


def test_twenty_thousand_steps_keep_memory_flat():
    X = data.make_synthetic(n=2000, d=16, random_state=0).base
    recorder, probe = run_traced(CheapLoop(n_iter=20_000), X, early=2_000, late=20_000, max_steps=500)
    assert len(recorder.steps) == 500 and recorder.steps[-1].step == 20_000
    assert len(recorder.history()) == 500
    assert probe.sample_rows == 300  # the embedding sample is capped, not the 2,000 rows
    growth = probe.memory[20_000] - probe.memory[2_000]
    # an unbounded history would hold 18,000 more steps (> 10 MB here); allow 256 KB of noise
    assert growth < 256 * 1024, f"memory grew by {growth / 1024:.0f} KB over 18,000 steps"


def test_a_long_pq_run_keeps_memory_flat():
    X = data.make_synthetic(n=200, d=8, random_state=0).base
    pq = methods.create("pq", n_subspaces=2, n_codewords=8, n_iter=1_500)
    recorder, probe = run_traced(pq, X, early=300, late=1_500, max_steps=100)
    assert len(recorder.steps) == 100 and pq.n_steps_ == 1_500
    growth = probe.memory[1_500] - probe.memory[300]
    assert growth < 256 * 1024, f"memory grew by {growth / 1024:.0f} KB over 1,200 Lloyd iterations"


def test_the_probe_sees_growth_when_history_is_unbounded():
    """The measurement can fail: the same run with a recorder that keeps every step grows."""
    X = data.make_synthetic(n=2000, d=16, random_state=0).base
    _, probe = run_traced(CheapLoop(n_iter=4_000), X, early=1_000, late=4_000, max_steps=None)
    assert probe.memory[4_000] - probe.memory[1_000] > 1024 * 1024
