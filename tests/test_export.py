"""``pqx export`` and :mod:`explorer.export`: the faiss index read back from disk returns the
search results of our own ADC (flat PQ, OPQ pre-transform, and IVF-PQ with nprobe = nlist), and
encoding/adding a memory-mapped base works in batches without a whole float32 copy."""
from __future__ import annotations

import tracemalloc

import faiss
import numpy as np
import pytest

from explorer import cli, data
from explorer.data import training_sample
from explorer.export import add_in_batches, empty_index, ivf_adc_search, train_index_model, write_index_atomic

M, K, K_NN = 8, 256, 10  # 64-bit codes: exact distance ties between base vectors are rare


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    ds = data.make_synthetic(n=3000, d=16, n_clusters=40, random_state=3)
    folder = tmp_path_factory.mktemp("export")
    data.write_vecs(folder / "base.fvecs", ds.base[200:])
    return folder, data.read_fvecs(folder / "base.fvecs"), ds.base[:200]


def params(method):
    extra = {"n_iter": 4} if method == "pq" else {"n_iter": 3, "n_iter_pq_first": 4, "n_iter_pq": 2}
    return {"n_subspaces": M, "n_codewords": K, "random_state": 0, **extra}


def assert_same_results(faiss_result, ours):
    (fd, fi), (od, oi) = faiss_result, ours
    np.testing.assert_allclose(fd, od, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(fi, oi)  # 64-bit codes of continuous data: no distance ties here


@pytest.mark.parametrize("method", ["pq", "opq"])
def test_flat_index_from_disk_matches_our_adc(files, tmp_path, method):
    _, base, queries = files
    model = train_index_model(method, params(method), training_sample(base, 1500, 0))
    index = empty_index(model)
    add_in_batches(index, base, batch_size=700)
    write_index_atomic(index, tmp_path / "x.faissindex")
    back = faiss.read_index(str(tmp_path / "x.faissindex"))
    assert back.ntotal == len(base)
    q = model.quantizer
    assert_same_results(back.search(queries, K_NN), q.search(queries, q.encode(base), K_NN))
    np.testing.assert_array_equal(back.sa_encode(np.ascontiguousarray(base[:50])), q.encode(base[:50]))  # same codes


@pytest.mark.parametrize("method", ["pq", "opq"])
def test_ivf_index_with_all_lists_probed_matches_our_exhaustive_adc(files, tmp_path, method):
    _, base, queries = files
    model = train_index_model(method, params(method), training_sample(base, 1500, 0), nlist=8)
    index = empty_index(model)
    add_in_batches(index, base, batch_size=1000)
    write_index_atomic(index, tmp_path / "ivf.faissindex")
    back = faiss.read_index(str(tmp_path / "ivf.faissindex"))
    faiss.extract_index_ivf(back).nprobe = 8
    assert_same_results(back.search(queries, K_NN), ivf_adc_search(model, queries, base, K_NN))
    # probing fewer lists is the speed/recall trade-off: it can only lose neighbours, never find closer ones
    faiss.extract_index_ivf(back).nprobe = 1
    d1, _ = back.search(queries, K_NN)
    assert (d1[:, 0] >= ivf_adc_search(model, queries, base, 1)[0][:, 0] - 1e-3).all()


def test_cli_export_writes_the_index_the_library_builds(files, tmp_path, capsys):
    folder, base, queries = files
    out = tmp_path / "cli.faissindex"
    argv = ["export", "--method", "opq", "--data", str(folder / "base.fvecs"), "-M", str(M), "-K", str(K),
            "--iters", "3", "--ivf", "8", "--train-size", "1500", "--add-batch", "999", "--quiet", "--index", str(out)]
    assert cli.main(argv) == 0
    assert "IVF8-PQ of 2800 vectors, 64 bits each" in capsys.readouterr().out
    back = faiss.read_index(str(out))
    assert isinstance(back, faiss.IndexPreTransform) and back.ntotal == len(base)
    faiss.extract_index_ivf(back).nprobe = 8
    model = train_index_model("opq", {"n_subspaces": M, "n_codewords": K, "n_iter": 3, "random_state": 0},
                              training_sample(base, 1500, 0), nlist=8)
    assert_same_results(back.search(queries, K_NN), ivf_adc_search(model, queries, base, K_NN))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.faissindex"]  # no temporary file left


def test_encoding_a_memory_map_does_not_copy_it_whole(tmp_path):
    X = data.make_synthetic(n=40_000, d=32, random_state=1).base
    data.write_vecs(tmp_path / "big.fvecs", X)
    mm = data.read_fvecs(tmp_path / "big.fvecs")  # strided memory map: a float32 copy would be 5 MB
    model = train_index_model("pq", {"n_subspaces": 8, "n_codewords": 16, "n_iter": 2}, training_sample(mm, 2000, 0))
    q = model.quantizer
    tracemalloc.start()
    try:
        codes = q.encode(mm, batch_size=2000)
        peak_encode = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        add_in_batches(empty_index(model), mm, batch_size=2000)
        peak_add = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    full_copy = X.nbytes
    assert peak_encode < full_copy / 4 and peak_add < full_copy / 4, (peak_encode, peak_add, full_copy)
    np.testing.assert_array_equal(codes, q.encode(X))
