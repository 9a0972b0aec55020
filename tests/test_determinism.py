"""Determinism: the same seed, data and method give identical codes on CPU, for every registered
method (deep methods included as they register), whatever the global RNGs were doing before."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer import data, methods

# small settings, applied only where the method has the parameter
SMALL = {"n_subspaces": 4, "n_codewords": 16, "n_iter": 2, "epochs": 1, "pretrain_epochs": 1, "warmup_epochs": 1}


@pytest.fixture(scope="module")
def digits500():
    ds = data.load_digits()
    return ds.base[:500], ds.labels[:500]


def small(name: str, seed: int):
    cls = methods.get(name)
    params = {k: v for k, v in SMALL.items() if k in cls.param_names()}
    return methods.create(name, random_state=seed, **params)


def fit_codes(name, X, y, seed):
    q = small(name, seed)
    q.fit(X, y if q.supervised else None)
    return q.encode(X)


@pytest.mark.parametrize("name", methods.available())
def test_same_seed_same_codes(digits500, name):
    X, y = digits500
    first = fit_codes(name, X, y, seed=7)
    # disturb every global generator between the two fits: nothing may depend on them
    np.random.seed(123), np.random.rand(5), torch.manual_seed(99), torch.rand(5)
    second = fit_codes(name, X, y, seed=7)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("name", ["pq", "opq"])
def test_the_seed_matters(digits500, name):
    """The test above is not vacuous: another seed gives other codes."""
    X, y = digits500
    assert not np.array_equal(fit_codes(name, X, y, seed=7), fit_codes(name, X, y, seed=8))
