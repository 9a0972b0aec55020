"""Shared fixtures: small datasets built from bundled or generated data (never downloaded)."""
import numpy as np
import pytest
import torch

from explorer import data

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def digits():
    """Digits with 200 held-out queries: base (1597, 64), labels, queries (200, 64)."""
    return data.split_queries(data.load("digits"), 200, random_state=0)


@pytest.fixture(scope="session")
def synthetic():
    """Seeded Gaussian mixture, 3000 × 32, 20 clusters, 200 held-out queries."""
    return data.split_queries(data.load("synthetic", n=3000, d=32, n_clusters=20), 200, random_state=0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
