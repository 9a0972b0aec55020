"""Shared fixtures: small datasets built from bundled or generated data (never downloaded)."""
import numpy as np
import pytest
import torch

from explorer import data

# The models under test are tiny: one thread is as fast as two and never thrashes when the
# machine is busy (notebook kernels and the browser tests' servers run beside the tests).
torch.set_num_threads(1)


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
