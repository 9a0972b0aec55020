"""evaluate on a memory-mapped base: read in batches and chunks, it gives what the one-shot
in-memory computation gives (codes, distortion, exact ground truth, recall, mAP, usage)."""
from dataclasses import replace

import faiss
import numpy as np
import pytest

from explorer import data, diagnostics, methods, metrics, search
from explorer.report import RECALL_AT, build_report, evaluate
from watched_rows import WatchedRows, mapped_digits


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory):
    """(memory-mapped split, in-memory split, fitted PQ): 2,000 × 32 synthetic vectors with labels
    in an .fvecs file, 150 queries held out (lazily on disk, by copy in memory)."""
    folder = tmp_path_factory.mktemp("report")
    ds = data.load("synthetic", n=2000, d=32, n_clusters=12, random_state=5)
    data.write_vecs(folder / "base.fvecs", ds.base)
    np.save(folder / "labels.npy", ds.labels)
    mapped = data.split_queries(data.load(folder / "base.fvecs", labels=folder / "labels.npy"), 150, random_state=1)
    in_memory = data.split_queries(replace(ds, name="base"), 150, random_state=1)
    pq = methods.create("pq", n_subspaces=8, n_codewords=32, n_iter=5).fit(in_memory.base)
    return mapped, in_memory, pq


@pytest.mark.parametrize("where", ["memory map", "in memory"])
def test_evaluate_in_batches_equals_the_one_shot_in_memory_computation(on_disk, monkeypatch, where):
    mapped, in_memory, pq = on_disk
    assert isinstance(mapped.base, data.RowsExcept)
    monkeypatch.setattr(search, "_KNN_CHUNK", 32 * 300)  # ground truth over 7 base chunks of 300 rows
    ev = evaluate(pq, mapped if where == "memory map" else in_memory, batch_size=256)  # 8 batches, the last partial

    # the reference: everything at once on the in-memory base, as evaluate did before batching
    X = in_memory.base
    codes = pq.encode(X)
    index = faiss.IndexFlatL2(X.shape[1])
    index.add(X)
    _, gt = index.search(in_memory.queries, max(RECALL_AT))
    _, ranking = pq.search(in_memory.queries, codes, len(X))
    np.testing.assert_array_equal(ev["codes"], codes)
    assert ev["distortion"] == pytest.approx(pq.embedding_distortion(X, codes), rel=1e-9)
    assert ev["recall_at"] == metrics.recalls(ranking, gt, RECALL_AT)
    assert ev["map"] == pytest.approx(metrics.mean_average_precision(ranking, in_memory.query_labels, in_memory.labels))
    np.testing.assert_array_equal(ev["usage"], diagnostics.usage_histogram(codes, 32))


def test_the_report_of_a_memory_mapped_base_equals_the_in_memory_one(on_disk):
    mapped, in_memory, pq = on_disk
    a, b = build_report(pq, mapped, []), build_report(pq, in_memory, [])
    assert a["distortion"] == pytest.approx(b["distortion"], rel=1e-9)
    differ = {"encode_seconds", "fit_seconds", "distortion"}
    assert {k: v for k, v in a.items() if k not in differ} == {k: v for k, v in b.items() if k not in differ}


@pytest.mark.parametrize("chunk_rows", [1, 97, 1850, 5000])
def test_exact_knn_in_base_chunks_equals_one_faiss_search(on_disk, chunk_rows):
    mapped, in_memory, _ = on_disk
    d_ref, i_ref = search.exact_knn(in_memory.base, in_memory.queries, 20, chunk_rows=10**6)
    d, i = search.exact_knn(mapped.base, mapped.queries, 20, chunk_rows=chunk_rows)
    np.testing.assert_array_equal(i, i_ref)  # float data: no ties
    np.testing.assert_allclose(d, d_ref, rtol=1e-5, atol=1e-4)
    assert i.shape == (150, 20) and i.dtype == np.int64 and d.dtype == np.float32


def test_evaluate_names_the_rows_of_a_bad_batch(on_disk):
    """A NaN in a row the fit never read (a --train-size sample) is reported with its rows."""
    _, in_memory, pq = on_disk
    X = in_memory.base.copy()
    X[1500, 3] = np.nan
    with pytest.raises(ValueError, match="in rows 1024–1849: X contains NaN or inf"):
        evaluate(pq, data.Dataset("bad", X))


@pytest.fixture(scope="module")
def digits_split():
    return data.split_queries(data.load("digits"), 200, random_state=0)


@pytest.mark.parametrize("name, params", [("pq", {"n_iter": 5}), ("rlq", {"n_iter": 1, "init_iter": 3})])
def test_map_in_blocks_of_queries_equals_ranking_all_queries_at_once(digits_split, monkeypatch, name, params):
    """mAP@all and recall are what one (nq, n) ranking gives, for any block of queries, while no
    search ever ranks more than a block: with K = 16 the distance tables of one query differ
    from its row of the tables of 200 in the last bits, which reorders near-ties unless the
    tables are computed once."""
    ds = digits_split
    q = methods.create(name, n_subspaces=4, n_codewords=16, **params).fit(ds.base)
    codes = q.encode(ds.base)
    _, ranking = q.search(ds.queries, codes, len(codes))  # the whole (nq, n) ranking, as evaluate did
    expected_map = metrics.mean_average_precision(ranking, ds.query_labels, ds.labels)
    gt = data.ground_truth(ds, max(RECALL_AT))
    widest = []
    adc = search.adc_search
    monkeypatch.setattr(search, "adc_search", lambda tables, c, k: (widest.append(len(tables)), adc(tables, c, k))[1])
    for block in (1, 7, 200, 500):
        widest.clear()
        ev = evaluate(q, ds, gt, map_block=block)
        assert ev["map"] == expected_map
        assert ev["recall_at"] == metrics.recalls(ranking, gt, RECALL_AT)
        if name == "pq":  # RLQ scans with its own loop
            assert max(widest) == min(block, 200)


@pytest.mark.parametrize("block", [1, 37, 10**6])
def test_a_full_ranking_orders_duplicate_codes_by_id_whatever_the_scan_blocks(monkeypatch, block):
    """2,000 vectors on 16 distinct codes (ties everywhere): the full ADC ranking is the order by
    (distance, id) however many codes one scan block holds, so blocked mAP@all equals one search."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, size=(2000, 2)).astype(np.uint8)
    tables = rng.random((5, 2, 4), dtype=np.float32)
    d_all = tables[:, 0, codes[:, 0]] + tables[:, 1, codes[:, 1]]              # (5, 2000), exact for 2 terms
    expected = np.stack([np.lexsort((np.arange(2000), row)) for row in d_all])
    monkeypatch.setattr(search, "_BLOCK", block * 5 * 2)                       # `block` codes per scan block
    d, ids = search.adc_search(tables, codes, 2000)
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(d, np.take_along_axis(d_all, expected, 1))
    _, top = search.adc_search(tables, codes, 10)                              # ties inside a top-k: by id too
    for q in range(5):
        tied = np.diff(d_all[q, top[q]]) == 0
        assert tied.any() and np.all(np.diff(top[q])[tied] > 0)


def test_map_in_blocks_needs_rankings_for_every_query():
    labels = np.array([0, 1, 0])
    ranking = np.array([[0, 2, 1], [1, 0, 2]])
    with pytest.raises(ValueError, match="cover 2 queries but there are 3"):
        metrics.map_in_blocks(iter([ranking]), np.array([0, 1, 1]), labels)
    (m,), first = metrics.map_in_blocks(iter([ranking[:1], ranking[1:]]), np.array([0, 1]), labels, ks=(None,), keep=2)
    assert m == metrics.mean_average_precision(ranking, np.array([0, 1]), labels)
    np.testing.assert_array_equal(first, ranking[:, :2])


def test_map_in_blocks_lets_go_of_scored_blocks():
    """A scored block is freed while later ones are ranked (the kept first ids are copies, not views
    of it), so memory holds at most the block being scored and the one being made."""
    import weakref
    rng = np.random.default_rng(0)
    base_labels, query_labels = rng.integers(0, 3, 500), rng.integers(0, 3, 40)
    refs, alive = [], []

    def rankings():
        for _ in range(10):
            alive.append(sum(r() is not None for r in refs))
            block = np.argsort(rng.random((4, 500)), axis=1)
            refs.append(weakref.ref(block))
            yield block

    metrics.map_in_blocks(rankings(), query_labels, base_labels, keep=5)
    assert max(alive) <= 2


@pytest.fixture(scope="module")
def digits_on_disk(tmp_path_factory, digits_split):
    """(digits split with its base on disk behind WatchedRows, the same split in memory)."""
    mapped = mapped_digits(tmp_path_factory.mktemp("digits"))
    np.testing.assert_array_equal(mapped.queries, digits_split.queries)
    return mapped, digits_split


@pytest.mark.parametrize("name, params", [
    ("dpq", {"epochs": 2, "backbone": "mlp"}),
    ("rlq", {"n_iter": 1, "init_iter": 3, "references": False}),  # references train faiss on the whole base
    ("fppq", {"epochs": 2, "backbone": "mlp"}),
    ("sscq", {"epochs": 1, "backbone": "mlp"}),
])
def test_deep_reports_read_a_mapped_base_in_batches_and_equal_the_in_memory_report(digits_on_disk, monkeypatch,
                                                                                  name, params):
    """The methods' extra report keys (DPQ's gap, per-LUT mAP and accuracy, RLQ's policy distortion,
    FPPQ's symmetric mAP, SSCQ's mAP@1000) come out the same when the base is read ≤ 1,024 rows at a
    time and the whole base is ranked for 7 queries at a time."""
    mapped, in_memory = digits_on_disk
    q = methods.create(name, n_subspaces=4, n_codewords=16, **params)
    q.fit(in_memory.base, in_memory.labels if q.supervised else None)
    expected = build_report(q, in_memory, [])  # one block of queries: n = 1,597 ranks 200 queries at once

    watched = replace(mapped, name=in_memory.name, base=WatchedRows(mapped.base.array, mapped.base.excluded))
    monkeypatch.setattr(search, "_KNN_CHUNK", 64 * 500)  # exact ground truth in chunks of 500 rows
    monkeypatch.setattr(metrics, "queries_per_block", lambda n_base: 7)
    full_rankings, adc = [], search.adc_search  # queries per ADC/SDC search that ranks the whole base
    monkeypatch.setattr(search, "adc_search", lambda tables, codes, k: (
        full_rankings.append(len(tables)) if k >= len(codes) else None, adc(tables, codes, k))[1])
    got = build_report(q, watched, [])
    assert max(watched.base.reads) <= 1024 < len(watched.base)
    assert max(full_rankings, default=0) <= 7
    timing = {"encode_seconds", "fit_seconds"}
    assert {k: v for k, v in got.items() if k not in timing} == {k: v for k, v in expected.items() if k not in timing}
    assert set(got) - set(expected) == set()
