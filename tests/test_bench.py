"""``pqx bench`` produces every promised ratio (finite, positive; speed itself is not asserted),
and the batched encoder it measures gives the same codes as a plain encode."""
from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

import explorer.bench
from explorer import data, methods
from explorer.cli import main
from explorer.search import encode_batched


def test_encode_batched_equals_encode_on_a_memory_mapped_bvecs_file(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(3001, 16)).astype(np.uint8)
    path = tmp_path / "x.bvecs"
    data.write_vecs(path, X)
    mapped = data.read_bvecs(path)
    assert isinstance(mapped.base, np.memmap) or isinstance(getattr(mapped.base, "base", None), np.memmap)
    pq = methods.create("pq", n_subspaces=4, n_codewords=16, n_iter=3).fit(X.astype(np.float32))
    codes = encode_batched(pq, mapped, batch=512)
    assert codes.dtype == np.uint8 and codes.shape == (3001, 4)
    np.testing.assert_array_equal(codes, pq.encode(X.astype(np.float32)))


def test_quick_bench_writes_every_key_finite_and_positive(tmp_path, monkeypatch, capsys):
    # Treat OPQ as a "deep" method so the per-method key is exercised whatever is registered.
    monkeypatch.setattr(explorer.bench, "CLASSIC", ("pq",))
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    keys = ["pq_fit_vs_faiss", "pq_encode_vs_faiss", "adc_search_vs_faiss", "map_all_vs_faiss", "hook_overhead",
            "mmap_encode_memory_vs_file", "monitor_overhead", "dashboard_redraws_per_second",
            "dashboard_training_slowdown"]
    keys += [f"{m}_encode_vs_pq" for m in methods.available() if m != "pq"]
    nanopq_keys = ["nanopq_fit_vs_faiss", "nanopq_encode_vs_faiss", "nanopq_adc_search_vs_faiss"]
    if importlib.util.find_spec("nanopq") is not None:  # a peer when the bench extra is installed
        keys += nanopq_keys
    else:
        assert all(result[key] is None for key in nanopq_keys)
    for key in keys:
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, (
            key, result["details"].get("dashboard"))  # a failed dashboard subprocess says why there
    details = result["details"]
    # both sides of mAP@all rank the same codes with the same codebooks: the same mAP
    assert details["map_all_vs_faiss"]["map"] == pytest.approx(details["map_all_vs_faiss"]["faiss_map"], abs=1e-6)
    assert any(lib.get("internal_api") == "openblas" for lib in details["blas"])  # faiss's BLAS, as threadpoolctl sees it
    assert "opq_encode_vs_pq" in result and result["quick"] is True
    printed = capsys.readouterr().out
    assert all(key in printed for key in keys)


def test_bench_names_a_device_it_cannot_use(capsys):
    """--device cuda without a GPU (or a made-up device): exit 2, one line, nothing on stdout."""
    import torch
    bad = "tpu" if torch.cuda.is_available() else "cuda"
    assert main(["bench", "--quick", "--device", bad]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and "device" in captured.err


def test_alternating_pairs_alternate_the_order_and_take_the_median_of_each_pairs_ratio():
    from explorer.bench import alternating_pairs
    calls = []
    base_s = iter([1.0, 2.0, 4.0, 1.0])
    treated_s = iter([1.1, 2.4, 4.0, 3.0])
    r = alternating_pairs(lambda: (calls.append("b"), next(base_s))[1],
                          lambda: (calls.append("t"), next(treated_s))[1], 4)
    assert calls == ["b", "t", "t", "b", "b", "t", "t", "b"]
    assert r["ratio"] == pytest.approx((1.1 + 1.2) / 2)  # median of 1.1, 1.2, 1.0, 3.0
    assert r["ratio_of_medians"] == pytest.approx(((2.4 + 3.0) / 2) / ((1.0 + 2.0) / 2))
    assert r["pairs"] == 4 and r["base_times"] == [1.0, 2.0, 4.0, 1.0]


@pytest.mark.parametrize("update_cost", [0.0, 0.1])
def test_monitor_overhead_reads_the_updates_cost_on_a_fake_clock(monkeypatch, update_cost):
    """The interleaved protocol on a clock that only the step (1.0 a step) and the monitor's update
    move: the monitored blocks must read 1 + update/step, a no-op monitor 1.0."""
    from types import SimpleNamespace

    from explorer import bench_watch
    clock = [0.0]
    real_model = bench_watch._VQAutoencoder

    class TimedModel(real_model):
        def forward(self, x):
            clock[0] += 1.0
            return super().forward(x)

    class FakeMonitor:
        def __init__(self, *args, **kwargs):
            self.updates = 0

        def update(self, codes, losses=None):
            self.updates += 1
            clock[0] += update_cost

        def close(self):
            pass

    monkeypatch.setattr(bench_watch, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(bench_watch, "_VQAutoencoder", TimedModel)
    monkeypatch.setattr(bench_watch, "CodebookMonitor", FakeMonitor)
    r = bench_watch.monitor_overhead(steps=24, repeats=2)
    assert r["ratio"] == pytest.approx(1.0 + update_cost) and r["runs"] == [pytest.approx(1.0 + update_cost)] * 2
    assert r["update_us"] == pytest.approx(1e6 * update_cost) and r["step_ms"] == pytest.approx(1e3)
