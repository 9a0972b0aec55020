"""metric="ip" | "cosine" for PQ and OPQ: search, exact ground truth and the faiss export match
faiss's METRIC_INNER_PRODUCT (cosine = inner product of L2-normalised vectors)."""
import faiss
import numpy as np
import pytest

from explorer import data, methods, report, search
from explorer.errors import InvalidParameter


@pytest.fixture(scope="module")
def split():
    """Synthetic base and held-out queries whose norms vary (0.5×–2×), so ip, cosine and L2 rank differently."""
    ds = data.split_queries(data.make_synthetic(3000, 32, random_state=0), 100, random_state=1)
    rng = np.random.default_rng(0)
    scale = lambda n: rng.uniform(0.5, 2.0, (n, 1)).astype(np.float32)
    return ds.base * scale(len(ds.base)), ds.queries * scale(len(ds.queries))


def _same_up_to_ties(ours, ref):
    """Distances equal rank by rank within 1e-4 (so ids differ only among items at the same
    distance: duplicate codes, which faiss leaves in its own order and we rank by id)."""
    (d, i), (fd, fi) = ours, ref
    np.testing.assert_allclose(d, fd, rtol=1e-4, atol=1e-4)
    assert (i == fi).mean() > 0.5
    tied = np.isclose(d[:, :-1], d[:, 1:], rtol=1e-6, atol=1e-6)
    assert (i[:, :-1][tied] < i[:, 1:][tied]).all()  # ours: equal distances by id


@pytest.mark.parametrize("name", ["pq", "opq"])
@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_search_matches_faiss_inner_product(split, name, metric):
    X, Q = split
    q = methods.create(name, n_subspaces=8, n_codewords=32, n_iter=4, metric=metric).fit(X)
    ours = q.search(Q, q.encode(X), 20)
    # the faiss reference built independently of to_faiss: IndexPQ(METRIC_INNER_PRODUCT) with our codebooks
    prepare = (lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)) if metric == "cosine" else (lambda v: v)
    index = faiss.IndexPQ(32, 8, 5, faiss.METRIC_INNER_PRODUCT)
    faiss.copy_array_to_vector(np.ascontiguousarray(q.codebooks_, dtype=np.float32).ravel(), index.pq.centroids)
    index.is_trained = True
    rot = (lambda v: v @ q.rotation_.T) if name == "opq" else (lambda v: v)
    index.add(np.ascontiguousarray(rot(prepare(X)), dtype=np.float32))
    ref = index.search(np.ascontiguousarray(rot(prepare(Q)), dtype=np.float32), 20)
    _same_up_to_ties(ours, ref)
    assert (ours[0][:, :-1] >= ours[0][:, 1:]).all()  # inner products, largest first
    exported = q.to_faiss()  # raw vectors in: the export normalises (cosine) and rotates (OPQ) itself
    exported.add(X)
    _same_up_to_ties(ours, exported.search(Q, 20))


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_exact_knn_matches_faiss_flat_ip_in_any_chunks(split, metric):
    X, Q = split
    prepare = (lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)) if metric == "cosine" else (lambda v: v)
    flat = faiss.IndexFlatIP(32)
    flat.add(np.ascontiguousarray(prepare(X), dtype=np.float32))
    ref_d, ref_i = flat.search(np.ascontiguousarray(prepare(Q), dtype=np.float32), 10)
    for chunk in (None, 97):
        d, i = search.exact_knn(X, Q, 10, metric=metric, chunk_rows=chunk)
        np.testing.assert_allclose(d, ref_d, rtol=1e-5, atol=1e-5)
        assert (i == ref_i).mean() > 0.99


def test_ip_search_finds_ip_neighbours_better_than_l2_search(split):
    """Held out: queries never seen in training; over three seeds the ip-metric PQ recovers the
    exact inner-product neighbour more often than the same PQ ranking by L2."""
    X, Q = split
    ds = data.Dataset("scaled", X, queries=Q)
    gt = data.ground_truth(ds, 100, metric="ip")
    for seed in (0, 1, 2):
        rec = {}
        for metric in ("l2", "ip"):
            q = methods.create("pq", n_subspaces=8, n_codewords=32, n_iter=4, metric=metric, random_state=seed).fit(X)
            rec[metric] = report.evaluate(q, ds, gt)["recall_at"]["10"]
        assert rec["ip"] > rec["l2"] + 0.1, (seed, rec)


def test_evaluate_scores_recall_against_the_quantizers_metric(split):
    X, Q = split
    ds = data.Dataset("scaled", X, queries=Q)
    q = methods.create("pq", n_subspaces=8, n_codewords=32, n_iter=4, metric="cosine").fit(X)
    auto = report.evaluate(q, ds)["recall_at"]
    given = report.evaluate(q, ds, data.ground_truth(ds, 100, metric="cosine"))["recall_at"]
    assert auto == given


def test_cosine_trains_on_unit_vectors(split):
    """Scaling the training vectors changes nothing for cosine: codebooks live on the unit sphere."""
    X, _ = split
    a = methods.create("pq", n_subspaces=8, n_codewords=32, n_iter=3, metric="cosine").fit(X)
    b = methods.create("pq", n_subspaces=8, n_codewords=32, n_iter=3, metric="cosine").fit(3.0 * X)
    np.testing.assert_allclose(a.codebooks_, b.codebooks_, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(a.encode(X), b.encode(5.0 * X))


def test_unknown_metric_is_refused_naming_it(split):
    X, Q = split
    with pytest.raises(InvalidParameter, match="metric='dot'.*l2, ip, cosine"):
        methods.create("pq", n_subspaces=8, n_codewords=32, metric="dot").fit(X)
    with pytest.raises(InvalidParameter, match="metric='angular'"):
        search.exact_knn(X, Q, 5, metric="angular")
