"""Metrics against hand-computed values, and the collapse detector on collapsed and healthy codebooks."""
import numpy as np
import pytest

from explorer import diagnostics, metrics
from explorer.methods import create


def test_recall_at_r():
    ranking = np.array([[5, 1, 2], [0, 3, 4], [9, 8, 7]])
    gt = np.array([[1], [0], [6]])
    assert metrics.recall_at(ranking, gt, 1) == pytest.approx(1 / 3)
    assert metrics.recall_at(ranking, gt, 2) == pytest.approx(2 / 3)
    assert metrics.recalls(ranking, gt, (1, 10)) == {"1": pytest.approx(1 / 3), "10": pytest.approx(2 / 3)}


def test_mean_average_precision_by_hand():
    base_labels = np.array([0, 1, 0, 1, 0])
    ranking = np.array([[0, 1, 2, 3, 4], [1, 0, 3, 2, 4]])
    q = np.array([0, 1])
    # query 0: relevant at ranks 1, 3, 5 → (1 + 2/3 + 3/5) / 3 ; query 1: ranks 1, 3 → (1 + 2/3) / 2
    expected = ((1 + 2 / 3 + 3 / 5) / 3 + (1 + 2 / 3) / 2) / 2
    assert metrics.mean_average_precision(ranking, q, base_labels) == pytest.approx(expected)
    assert metrics.mean_average_precision(ranking, q, base_labels, k=1) == pytest.approx(1.0)


def test_distortion_and_soft_hard_gap():
    X = np.zeros((2, 3))
    assert metrics.distortion(X, X + 1) == pytest.approx(3.0)
    p = np.array([[[0.9, 0.1]], [[0.2, 0.8]]])
    out = metrics.soft_hard_gap(np.zeros((2, 2)), np.ones((2, 2)), p, np.array([[0], [0]]))
    assert out == {"gap": pytest.approx(2.0), "agreement": pytest.approx(0.5)}


def test_detector_flags_a_collapsed_codebook_and_passes_a_healthy_one(digits):
    healthy = create("pq", n_codewords=256).fit(digits.base)
    bad = create("pq", n_codewords=256, init="narrow", repair_empty=False).fit(digits.base)
    for model, expect in ((healthy, False), (bad, True)):
        usage = diagnostics.usage_histogram(model.encode(digits.base), 256)
        verdicts = diagnostics.detect_collapse(usage)
        assert [v.collapsed for v in verdicts] == [expect] * 8
        assert ("dead" in verdicts[0].reason) and ("perplexity" in verdicts[0].reason)


def test_detector_rules_on_synthetic_usage():
    K = 16
    uniform = np.full((1, K), 100)
    one_hot = np.zeros((1, K), dtype=int)
    one_hot[0, 3] = 1600
    half_dead = np.r_[np.full(6, 100), np.zeros(10)][None, :]
    v = diagnostics.detect_collapse(np.vstack([uniform, one_hot, half_dead]))
    assert [x.collapsed for x in v] == [False, True, True]
    assert v[0].perplexity == pytest.approx(K)
    assert "10 of 16 codewords dead" in v[2].reason
    # a subspace whose data hold only 2 distinct sub-vectors is judged against 2, not K
    two = np.r_[[800, 800], np.zeros(K - 2)][None, :]
    assert diagnostics.detect_collapse(two)[0].collapsed
    assert not diagnostics.detect_collapse(two, n_distinct=np.array([2]))[0].collapsed


def test_codes_that_follow_classes_are_judged_against_the_class_count(digits):
    """FPPQ puts each class on one codeword per subspace: 10 of 256 codewords is its design.
    The report measures it against the 10 classes; piling all classes on 2 codewords still fires."""
    from explorer.methods import get
    assert get("fppq").codes_follow_classes and get("dpq").codes_follow_classes
    assert not get("pq").codes_follow_classes and not get("sscq").codes_follow_classes
    fppq = create("fppq", epochs=1, random_state=0)
    assert fppq.usable_codewords(digits.labels) == 10 and create("pq").usable_codewords(digits.labels) is None
    ten = np.zeros((1, 256), dtype=int)
    ten[0, :10] = 160
    two = np.zeros((1, 256), dtype=int)
    two[0, :2] = 800
    assert diagnostics.detect_collapse(ten)[0].collapsed  # against K it looks collapsed
    assert not diagnostics.detect_collapse(ten, n_distinct=np.array([10]))[0].collapsed
    assert diagnostics.detect_collapse(two, n_distinct=np.array([10]))[0].collapsed
