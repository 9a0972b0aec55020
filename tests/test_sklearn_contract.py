"""scikit-learn's estimator contract on every quantizer, checked with scikit-learn itself:
get_params(deep=True), set_params, clone, fit_transform, score (negative distortion), Pipeline
and GridSearchCV."""
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from explorer import data, methods


@pytest.fixture(scope="module")
def X():
    return data.load("digits").base


@pytest.mark.parametrize("name", methods.available())
def test_clone_gives_an_unfitted_twin_with_equal_params(name):
    q = methods.create(name, n_subspaces=4, n_codewords=16, random_state=3)
    twin = clone(q)
    assert type(twin) is type(q) and twin is not q
    assert twin.get_params(deep=True) == q.get_params(deep=False) == q.get_params()
    assert not hasattr(twin, "codebooks_")


def test_set_params_returns_self_and_changes_the_fit(X):
    q = methods.create("pq", n_subspaces=4, n_codewords=16, n_iter=3)
    assert q.set_params(n_subspaces=8) is q
    assert q.fit(X).codebooks_.shape == (8, 16, 8)


def test_fit_transform_is_fit_then_transform(X):
    q = methods.create("opq", n_subspaces=8, n_codewords=16, n_iter=2)
    Z = q.fit_transform(X)
    np.testing.assert_array_equal(Z, q.transform(X))
    np.testing.assert_allclose(Z, X @ q.rotation_.T, rtol=1e-5, atol=1e-4)


def test_score_is_the_negative_distortion_on_held_out_vectors(X):
    q = methods.create("pq", n_subspaces=8, n_codewords=16, n_iter=3).fit(X[:1500])
    held = X[1500:]
    assert q.score(held) == pytest.approx(-q.embedding_distortion(held))
    assert q.score(held) < 0


def test_grid_search_over_a_pipeline_picks_the_lowest_held_out_distortion(X):
    """GridSearchCV scores each M on folds the quantizer never saw; more subspaces quantize
    finer, so M=8 must beat M=2 in every fold, and the search must say so."""
    pipe = Pipeline([("scale", StandardScaler()), ("pq", methods.create("pq", n_codewords=16, n_iter=4))])
    grid = GridSearchCV(pipe, {"pq__n_subspaces": [2, 8]}, cv=3).fit(X)
    assert grid.best_params_ == {"pq__n_subspaces": 8}
    folds = np.array([grid.cv_results_[f"split{i}_test_score"] for i in range(3)])  # (folds, candidates)
    assert (folds[:, 1] > folds[:, 0]).all() and (folds < 0).all()
    per_fold = cross_val_score(methods.create("pq", n_subspaces=8, n_codewords=16, n_iter=4), X, cv=3)
    assert per_fold.shape == (3,) and (per_fold < 0).all()
