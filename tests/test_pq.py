"""PQ: training behaviour and parity with faiss ProductQuantizer."""
import numpy as np
import pytest

from explorer import data, events, metrics, search
from explorer.errors import InvalidParameter, InvalidType
from explorer.methods import create


def _recall(quantizer, ds, gt):
    codes = quantizer.encode(ds.base)
    _, ids = quantizer.search(ds.queries, codes, 100)
    return metrics.recalls(ids, gt)


SEEDS = range(5)
PARITY_DATA = {
    "digits": lambda: data.split_queries(data.load("digits"), 500, random_state=1),
    "synthetic": lambda: data.split_queries(data.load("synthetic", n=5000, d=32, n_clusters=20), 1000, random_state=1),
}


@pytest.mark.parametrize("dataset,M,K", [("digits", 8, 256), ("digits", 16, 16), ("synthetic", 8, 64)])
def test_distortion_and_recall_match_faiss(dataset, M, K):
    """Same data, same M and K: distortion within 2% of faiss ProductQuantizer and 1-recall@R
    within 0.02, each averaged over 5 seeds on both sides with 500–1000 queries (one run of 200
    queries moves recall@1 by ±0.03 through the random initialisation alone)."""
    ds = PARITY_DATA[dataset]()
    X = np.asarray(ds.base)
    gt = data.ground_truth(ds)
    ours_d, ref_d, ours_r, ref_r = [], [], [], []
    for seed in SEEDS:
        ours = create("pq", n_subspaces=M, n_codewords=K, random_state=seed).fit(X)
        ours_d.append(metrics.distortion(X, ours.decode(ours.encode(X))))
        ours_r.append(_recall(ours, ds, gt))
        ref = search.faiss_reference("pq", X, M, K, seed=1234 + seed)
        ref_d.append(search.faiss_codes_distortion(ref, X))
        ref.add(X)
        ref_r.append(metrics.recalls(ref.search(np.asarray(ds.queries), 100)[1], gt))
    assert abs(np.mean(ours_d) - np.mean(ref_d)) / np.mean(ref_d) < 0.02, (ours_d, ref_d)
    for r in ("1", "10", "100"):
        ours_mean, ref_mean = np.mean([x[r] for x in ours_r]), np.mean([x[r] for x in ref_r])
        assert abs(ours_mean - ref_mean) <= 0.02 + 1e-9, (r, ours_mean, ref_mean)


def test_distortion_falls_over_iterations(digits):
    rec = events.Recorder()
    create("pq", n_subspaces=8, n_codewords=64, n_iter=15).fit(digits.base, callbacks=[rec])
    losses = [s.loss for s in rec.steps]
    assert len(losses) == 15
    assert all(b <= a + 1e-3 for a, b in zip(losses, losses[1:])), losses  # Lloyd never increases the error
    assert losses[-1] < 0.8 * losses[0]


def test_codes_dtype_shape_and_roundtrip(digits):
    pq = create("pq", n_subspaces=8, n_codewords=256, n_iter=5).fit(digits.base)
    codes = pq.encode(digits.base)
    assert codes.shape == (digits.n, 8) and codes.dtype == np.uint8
    assert pq.codebooks_.shape == (8, 256, 8) and pq.codebooks_.dtype == np.float32
    np.testing.assert_array_equal(pq.encode(pq.decode(codes)), codes)  # a codeword encodes to itself
    wide = create("pq", n_subspaces=4, n_codewords=300, n_iter=2).fit(digits.base)
    assert wide.encode(digits.base[:5]).dtype == np.uint16


def test_to_faiss_gives_same_codes_and_distances(digits):
    pq = create("pq", n_subspaces=8, n_codewords=256, n_iter=10).fit(digits.base)
    index = pq.to_faiss()
    np.testing.assert_array_equal(index.sa_encode(np.asarray(digits.base)), pq.encode(digits.base))
    codes = pq.encode(digits.base)
    index.add(np.asarray(digits.base))
    D_ref, I_ref = index.search(np.asarray(digits.queries), 10)
    D, I = pq.search(digits.queries, codes, 10)
    np.testing.assert_allclose(D, D_ref, rtol=1e-4, atol=1e-2)
    assert (I == I_ref).mean() > 0.98  # ties may order differently


def test_sdc_ranks_like_adc_roughly(digits):
    pq = create("pq", n_subspaces=8, n_codewords=256).fit(digits.base)
    codes = pq.encode(digits.base)
    gt = data.ground_truth(digits)
    _, adc = pq.search(digits.queries, codes, 100)
    _, sdc = search.sdc_search(pq, pq.encode(digits.queries), codes, 100)
    assert metrics.recall_at(sdc, gt, 10) > 0.8
    assert metrics.recall_at(adc, gt, 10) >= metrics.recall_at(sdc, gt, 10)  # ADC is the more accurate one


def test_seeded_training_is_deterministic(digits):
    a = create("pq", n_codewords=64, random_state=3).fit(digits.base).encode(digits.base)
    b = create("pq", n_codewords=64, random_state=3).fit(digits.base).encode(digits.base)
    c = create("pq", n_codewords=64, random_state=4).fit(digits.base).encode(digits.base)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_empty_clusters_are_repaired(digits):
    """A deliberately narrow start leaves most codewords dead unless they are repaired (faiss split)."""
    X = digits.base
    bad = create("pq", n_codewords=256, init="narrow", repair_empty=False, n_iter=10).fit(X)
    good = create("pq", n_codewords=256, init="narrow", n_iter=10).fit(X)
    dead_bad = (np.bincount(bad.encode(X)[:, 0], minlength=256) == 0).sum()
    dead_good = (np.bincount(good.encode(X)[:, 0], minlength=256) == 0).sum()
    assert dead_bad > 128 and dead_good == 0


@pytest.mark.parametrize("kwargs,exc,words", [
    (dict(n_subspaces=7), InvalidParameter, ["n_subspaces", "choose M from"]),
    (dict(n_codewords=5000), InvalidParameter, ["n_codewords", "exceeds"]),
    (dict(n_codewords=70000), InvalidParameter, ["n_codewords", "65536"]),
    (dict(n_iter=0), InvalidParameter, ["n_iter"]),
    (dict(init="kmeans"), InvalidParameter, ["init"]),
])
def test_bad_parameters_name_the_parameter(digits, kwargs, exc, words):
    with pytest.raises(exc) as err:
        create("pq", **kwargs).fit(digits.base)
    for word in words:
        assert word in str(err.value)


def test_bad_input_data(digits):
    pq = create("pq", n_codewords=16)
    X = np.array(digits.base)
    X[3, 5] = np.nan
    with pytest.raises(InvalidParameter, match="NaN"):
        pq.fit(X)
    with pytest.raises(InvalidType, match="2-D"):
        pq.fit(X[0])
    with pytest.raises(InvalidType, match="dtype"):
        pq.fit(np.array([["a", "b"]]))
    pq.fit(digits.base)
    with pytest.raises(InvalidType, match="dimension 32"):
        pq.encode(np.zeros((2, 32)))
    with pytest.raises(InvalidParameter, match="not fitted"):
        create("pq").encode(digits.base)


@pytest.mark.parametrize("sub_dim", [4, 16])
def test_distance_tables_are_squared_distances_to_every_codeword(sub_dim):
    """PQ's tables (faiss's compute_distance_tables: direct sums below d/M = 16, BLAS above) are
    ||q_m − c_mk||² (float64 reference, float32 rounding), for OPQ in the rotated space."""
    rng = np.random.default_rng(sub_dim)
    X = rng.standard_normal((3000, 4 * sub_dim)).astype(np.float32)
    Q = rng.standard_normal((37, 4 * sub_dim)).astype(np.float32)
    for name in ("pq", "opq"):
        q = create(name, n_subspaces=4, n_codewords=16, n_iter=3).fit(X)
        Z = q.transform(Q).astype(np.float64).reshape(37, 4, 1, sub_dim)
        ref = ((Z - q.codebooks_[None].astype(np.float64)) ** 2).sum(-1)
        tables = q.distance_tables(Q)
        assert tables.shape == (37, 4, 16) and tables.dtype == np.float32
        np.testing.assert_allclose(tables, ref, rtol=1e-5, atol=1e-4)
