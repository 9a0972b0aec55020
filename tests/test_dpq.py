"""DPQ (Klein & Wolf): retrieval beats PQ, the Gini and JCL terms do what the paper says,
the three look-up tables agree with brute force, determinism, and parameter errors.

Small and fast: digits (1597 base, 200 held-out queries), M=4, K=64 (24 bits), the MLP
feature network, 8 epochs (~2 s a fit on one core). The Gini and JCL claims are checked on
the mean over 3 seeds, each pair trained from the same seed.
"""
import json

import numpy as np
import pytest
import torch

from explorer import data, events, metrics, search
from explorer.cli import main
from explorer.diagnostics import perplexity, usage_histogram
from explorer.errors import InvalidParameter, InvalidType
from explorer.methods import create


M, K = 4, 64
FAST = dict(n_subspaces=M, n_codewords=K, epochs=8, backbone="mlp")
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These nets are tiny: one thread is as fast, and makes the results independent of the core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ds():
    return data.split_queries(data.load("digits"), 200, random_state=0)


_cache: dict = {}


def fitted(ds, seed=0, **params):
    """A DPQ fitted on the digits base (cached: several tests share the default fits)."""
    key = (seed, tuple(sorted(params.items())))
    if key not in _cache:
        rec = events.Recorder()
        q = create("dpq", random_state=seed, **{**FAST, **params})
        q.fit(np.asarray(ds.base), ds.labels, callbacks=[rec])
        _cache[key] = (q, rec)
    return _cache[key]


def _map(ds, ranking):
    return metrics.mean_average_precision(ranking, ds.query_labels, ds.labels)


def test_asymmetric_map_beats_pq_on_raw_pixels_at_same_bits(ds):
    dpq, _ = fitted(ds)
    codes = dpq.encode(ds.base)
    dpq_map = _map(ds, dpq.search_by_lut(ds.queries, codes, len(codes), "asymmetric"))
    pq = create("pq", n_subspaces=M, n_codewords=K, random_state=0).fit(np.asarray(ds.base))
    assert pq.bits == dpq.bits == 24
    pq_map = _map(ds, pq.search(ds.queries, pq.encode(ds.base), len(codes))[1])
    assert dpq_map > pq_map + 0.2, (dpq_map, pq_map)


def test_gini_off_lowers_codeword_perplexity(ds):
    """Eq. 6 spreads the batch over the codewords: usage perplexity of the hard codes is higher
    with the Gini terms than without (same seeds). The effect is modest at this scale (~5%)."""
    def ppl(q):
        return perplexity(usage_histogram(q.encode(ds.base), K)).mean()
    on = [ppl(fitted(ds, s)[0]) for s in SEEDS]
    off = [ppl(fitted(ds, s, gini=False)[0]) for s in SEEDS]
    assert np.mean(off) < np.mean(on), (off, on)


def test_joint_central_loss_brings_soft_and_hard_closer(ds):
    """Shared class centres for soft and hard (Sec. 3): a smaller final soft-hard gap, both
    in absolute terms and relative to the size of the hard representation (mean of 3 seeds).

    Holds with the default Gini weights at this scale, and only there: with the Gini terms off
    or a weak Gini-sample weight (0.1) the JCL widened the gap in our runs, and at 12 epochs one
    of these 3 seeds reverses (see the DPQ docstring and notebook 04)."""
    def gaps(q):
        X = np.asarray(ds.base)
        soft, hard = q.transform(X), q.reconstruct(q.encode(X))
        gap = metrics.distortion(soft, hard)
        return gap, gap / float((hard.astype(np.float64) ** 2).sum(1).mean())
    with_jcl = np.array([gaps(fitted(ds, s)[0]) for s in SEEDS])
    without = np.array([gaps(fitted(ds, s, jcl=0.0)[0]) for s in SEEDS])
    assert with_jcl[:, 0].mean() < without[:, 0].mean(), (with_jcl, without)
    assert with_jcl[:, 1].mean() < without[:, 1].mean(), (with_jcl, without)


def test_steps_report_every_loss_term_usage_and_soft_hard(ds):
    q, rec = fitted(ds)
    assert len(rec.steps) == FAST["epochs"]
    for step in rec.steps:
        assert set(step.losses) == {"total", "cls_soft", "cls_hard", "jcl", "gini_batch", "gini_sample"}
        assert step.usage.shape == (M, K) and step.usage.sum() == M * (len(ds.base) // 64) * 64
        assert set(step.soft_hard) == {"gap", "agreement"} and 0 <= step.soft_hard["agreement"] <= 1
    # the classification terms fall as training goes on
    assert rec.steps[-1].losses["cls_hard"] < 0.5 * rec.steps[0].losses["cls_hard"]
    off, _ = fitted(ds, 0, gini=False)
    sample = off._sample(np.asarray(ds.base), size=50)
    assert sample.subvectors.shape == (M, 50, 64 // M) and sample.codes.shape == (50, M)


def test_encode_is_argmax_and_luts_match_brute_force(ds):
    q, _ = fitted(ds)
    X = np.asarray(ds.base)
    codes = q.encode(X)
    soft, hard = q.transform(X), q.reconstruct(codes)
    # asymmetric LUT distance == ||soft(x) − hard(y)||² (Sec. 3.1.4)
    d_lut, ids = q.search(ds.queries[:5], codes, 10)
    brute = ((q.transform(ds.queries[:5])[:, None, :] - hard[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(d_lut, np.take_along_axis(brute, ids, 1), rtol=1e-4, atol=1e-4)
    # symmetric LUT distance == ||hard(x) − hard(y)||² (Sec. 3.1.3)
    d_sym, ids = search.sdc_search(q, codes[:5], codes, 10)
    brute = ((hard[:5, None, :] - hard[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(d_sym, np.take_along_axis(brute, ids, 1), rtol=1e-4, atol=1e-4)
    # classification LUT == the linear head on the hard representation (Sec. 3.1.2)
    W, b = q.classifier_
    np.testing.assert_allclose(q.predict_codes(codes[:50]), hard[:50] @ W.T + b, rtol=1e-4, atol=1e-4)
    # soft agrees with its codes for almost every sub-vector after training
    assert metrics.distortion(soft, hard) < 0.1 * float((hard ** 2).sum(1).mean())


def test_intra_normalization_gives_unit_subvectors_without_retraining(ds):
    q, _ = fitted(ds)
    try:
        q.set_params(intra_normalize=True)
        Z = q.transform(ds.queries).reshape(len(ds.queries), M, -1)
        np.testing.assert_allclose(np.linalg.norm(Z, axis=-1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(q.codebooks_, axis=-1), 1.0, rtol=1e-5)
        assert np.array_equal(q.encode(ds.base[:20]), q.encode(ds.base[:20]))
    finally:
        q.set_params(intra_normalize=False)


def test_same_seed_same_codes(ds):
    X = np.asarray(ds.base)
    a = create("dpq", random_state=3, **{**FAST, "epochs": 2}).fit(X, ds.labels).encode(X)
    b = create("dpq", random_state=3, **{**FAST, "epochs": 2}).fit(X, ds.labels).encode(X)
    c = create("dpq", random_state=4, **{**FAST, "epochs": 2}).fit(X, ds.labels).encode(X)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("params,needle", [
    (dict(embedding_dim=30), "embedding_dim"),
    (dict(jcl=-1.0), "jcl"),
    (dict(gini_batch="a lot"), "gini_batch"),
    (dict(gini="no"), "gini"),
    (dict(hidden_dim=0), "hidden_dim"),
    (dict(centre_rate=2.0), "centre_rate"),
    (dict(cls_soft=0, cls_hard=0, jcl=0, gini=False), "loss weight"),
])
def test_bad_parameters_name_themselves(ds, params, needle):
    with pytest.raises((InvalidParameter, InvalidType), match=needle):
        create("dpq", **{**FAST, **params}).fit(np.asarray(ds.base[:100]), ds.labels[:100])


def test_supervised_errors(ds):
    X = np.asarray(ds.base[:100])
    with pytest.raises(InvalidParameter, match="supervised"):
        create("dpq", **FAST).fit(X)
    with pytest.raises(InvalidParameter, match="2 classes"):
        create("dpq", **FAST).fit(X, np.zeros(100, dtype=np.int64))
    with pytest.raises(InvalidParameter, match="lut"):
        fitted(ds)[0].search_by_lut(ds.queries, fitted(ds)[0].encode(ds.base), 5, "hamming")


def test_cli_train_writes_per_lut_report(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["train", "--method", "dpq", "--data", "digits", "--epochs", "2", "--backbone", "mlp", "--no-gini",
               "--quiet", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["method"] == "dpq" and report["bits"] == 24
    for key in ("map_by_lut", "map_at_1000_by_lut"):
        assert set(report[key]) == {"symmetric", "asymmetric", "classification"}
        assert all(0 < v <= 1 for v in report[key].values())
    assert report["map"] == pytest.approx(report["map_by_lut"]["asymmetric"])
    assert set(report["soft_hard_gap"]) >= {"gap", "agreement"}
    assert 0 <= report["accuracy_from_codes"] <= 1
    assert report["loss_weights"]["gini_batch"] == 0.0
    assert "loss_gini_batch" not in report["history"][-1] and "soft_hard_gap" in report["history"][-1]
