"""PQ and OPQ train, encode and search on a CUDA GPU like on the CPU. Marked ``gpu`` and skipped
without one (``.ci/gpu`` runs them on a GPU machine): the GPU path is torch (k-means assignment,
ADC scan), the CPU path faiss, so these compare the two on the same data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer import data, methods, search
from explorer.kmeans import assign_nearest

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def digits():
    return data.split_queries(data.load("digits"), 100, random_state=0)


def test_assignment_on_gpu_equals_the_cpu_one():
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.standard_normal((4, 20000, 8)).astype(np.float32))
    C = torch.from_numpy(rng.standard_normal((4, 256, 8)).astype(np.float32))
    a_cpu, d_cpu = assign_nearest(X, C)
    a_gpu, d_gpu = assign_nearest(X.cuda(), C.cuda())
    assert a_gpu.is_cuda and (a_gpu.cpu() != a_cpu).float().mean() < 1e-4  # float32 near-ties only
    np.testing.assert_allclose(d_gpu.cpu().numpy(), d_cpu.numpy(), rtol=1e-4, atol=1e-4)


def test_adc_scan_on_gpu_gives_the_cpu_bits():
    rng = np.random.default_rng(1)
    tables = (rng.random((30, 8, 256), dtype=np.float32) * 100).astype(np.float32)
    codes = rng.integers(0, 256, size=(5000, 8)).astype(np.uint8)
    for k in (10, 5000):
        d_cpu, i_cpu = search.adc_search(tables, codes, k)
        d_gpu, i_gpu = search.adc_search(tables, codes, k, device="cuda")
        np.testing.assert_array_equal(i_gpu, i_cpu)
        np.testing.assert_array_equal(d_gpu, d_cpu)


@pytest.mark.parametrize("name", ["pq", "opq"])
def test_fit_encode_search_on_gpu_match_the_cpu(digits, name):
    params = dict(n_subspaces=8, n_codewords=256, random_state=0)
    params.update(n_iter=10) if name == "pq" else params.update(n_iter=5)
    cpu = methods.create(name, **params).fit(digits.base)
    gpu = methods.create(name, device="cuda", **params).fit(digits.base)
    assert gpu.device_.type == "cuda"
    d_cpu = cpu.embedding_distortion(digits.base)
    d_gpu = gpu.embedding_distortion(digits.base)
    assert d_gpu == pytest.approx(d_cpu, rel=0.02)  # GPU sums in another order: close, not equal
    codes = gpu.encode(digits.base)
    cpu_view = methods.create(name, **params)  # gpu's codebooks, encoded and searched on the CPU
    cpu_view.__dict__.update({k: v for k, v in gpu.__dict__.items() if k != "device_"})
    assert (cpu_view.encode(digits.base) == codes).mean() > 0.999
    _, ids_gpu = gpu.search(digits.queries, codes, 10)
    _, ids_cpu = cpu_view.search(digits.queries, codes, 10)
    np.testing.assert_array_equal(ids_gpu, ids_cpu)


def test_monitor_holds_cuda_codes_until_their_step_and_counts_them_there():
    """CUDA batches are held by reference (no copy, no synchronisation per update) and counted at
    the step like the same codes on the CPU; one overwritten in place before its step is refused."""
    from explorer.monitor import CodebookMonitor
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 16, (64, 2), generator=g) for _ in range(4)]
    on_gpu = CodebookMonitor(16, 2, every=4)
    on_cpu = CodebookMonitor(16, 2, every=4)
    for b in batches:
        on_gpu.update(b.cuda())
        on_cpu.update(b)
    np.testing.assert_array_equal(on_gpu.usage, on_cpu.usage)
    mon = CodebookMonitor(16, 2, every=2)
    held = batches[0].cuda()
    mon.update(held)
    held.zero_()
    with pytest.raises(ValueError, match="codes of update 1 were overwritten in place"):
        mon.update(batches[1].cuda())
