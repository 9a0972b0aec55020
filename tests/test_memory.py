"""Bounded memory: a long training run keeps the event history at the recorder's size, embedding
samples at ≤ 300 rows, and memory (measured with tracemalloc) flat from early on to the end;
`pqx train --train-size` on a memory-mapped file peaks far below the file's size."""
from __future__ import annotations

import json
import tracemalloc

import faiss  # noqa: F401  imported before any tracing: its 4 MB of module objects are not a run's memory
import numpy as np
import pytest

from explorer import cli, data, methods
from explorer.events import Recorder, Step
from explorer.methods.base import Quantizer
from watched_rows import WatchedRows


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


def _write_fvecs_chunked(path, n, d, seed=0, chunk=10_000):
    """An (n, d) .fvecs file of a Gaussian mixture, written chunk by chunk."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, d)).astype(np.float32)
    with open(path, "wb") as fh:
        for start in range(0, n, chunk):
            b = min(chunk, n - start)
            rec = np.empty((b, 1 + d), dtype="<f4")
            rec[:, 0] = np.full(b, d, dtype="<i4").view("<f4")
            rec[:, 1:] = centres[rng.integers(0, 20, size=b)] + 0.5 * rng.standard_normal((b, d))
            fh.write(rec.tobytes())


@pytest.mark.parametrize("queries", ["held out of the file", "a queries file"])
def test_train_on_a_memory_mapped_base_stays_far_below_its_size(tmp_path, queries):
    """`pqx train --train-size 2000` on a 48 MB .fvecs file (93,000 × 128) peaks at a small
    fraction of the file in traced memory: the fit reads 2,000 rows, held-out queries are skipped
    lazily, the evaluation reads 1,024-row batches and 4,096-row ground-truth chunks and keeps the
    (93,000, 8) uint8 codes.

    What tracemalloc sees: numpy arrays and Python objects (batches, codes, the training sample;
    numpy reports its buffers to it). What it does not see: buffers that torch and faiss allocate
    in C++ (k-means distance blocks, faiss's copy of each ground-truth chunk, top-k tensors) and
    pages of the mapped file (page cache). Those are bounded by the same batch and chunk sizes;
    `pqx bench` measures the whole process (RssAnon) for the encode.
    """
    base = tmp_path / "base.fvecs"
    _write_fvecs_chunked(base, 93_000, 128)
    argv = ["train", "--method", "pq", "--data", str(base), "--train-size", "2000", "-M", "8", "-K", "256",
            "--iters", "3", "--quiet", "--json", str(tmp_path / "r.json")]
    if queries == "a queries file":
        _write_fvecs_chunked(tmp_path / "q.fvecs", 200, 128, seed=1)
        argv += ["--queries", str(tmp_path / "q.fvecs")]
    cli.build_parser()  # imports every command and method module: their code objects are not the run's memory
    tracemalloc.start()
    try:
        assert cli.main(argv) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_train"] == 2000 and report["n_base"] + report["n_queries"] in (93_000, 93_200)
    # a real evaluation ran: every base vector was encoded, and the queries searched against ground truth
    assert np.array(report["usage"]).sum() == 8 * report["n_base"] and 0 < report["recall_at"]["100"] <= 1
    size = base.stat().st_size
    assert peak < 0.3 * size, f"peak traced memory {peak / 2**20:.1f} MB for a {size / 2**20:.1f} MB file"


@pytest.mark.parametrize("name, params", [("pq", {"n_iter": 3}), ("dpq", {"epochs": 1, "backbone": "mlp"}),
                                          ("sscq", {"epochs": 1, "backbone": "mlp"})])
def test_encode_and_transform_read_a_lazy_base_in_batches(tmp_path, monkeypatch, name, params):
    """`encode` of a RowsExcept (queries skipped in a memory map) reads it ``batch_size`` rows at a
    time and gives the codes of the in-memory rows; the deep methods' `transform` reads it a
    batch of INFERENCE_BATCH rows at a time too."""
    from explorer.methods import _deep
    ds = data.load("digits")
    data.write_vecs(tmp_path / "base.fvecs", ds.base)
    held = np.arange(0, len(ds.base), 9)
    lazy = WatchedRows(data.read_fvecs(tmp_path / "base.fvecs"), held)
    X = np.delete(ds.base, held, axis=0)
    q = methods.create(name, n_subspaces=4, n_codewords=16, **params)
    q.fit(X, ds.labels[np.setdiff1d(np.arange(len(ds.base)), held)] if q.supervised else None)
    expected_codes, expected_z = q.encode(X), q.transform(X)
    np.testing.assert_array_equal(q.encode(lazy, batch_size=300), expected_codes)
    assert max(lazy.reads) == 300
    if name != "pq":
        monkeypatch.setattr(_deep, "INFERENCE_BATCH", 250)
        lazy.reads.clear()
        # the network runs on batches of 250 rows instead of 1,437: BLAS may round differently
        np.testing.assert_allclose(q.transform(lazy), expected_z, rtol=1e-5, atol=1e-6)
        assert max(lazy.reads) == 250
