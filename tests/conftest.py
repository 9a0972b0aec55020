"""Shared fixtures: small datasets built from bundled or generated data (never downloaded)."""
import numpy as np
import pytest
import torch

from explorer import data

# The models under test are tiny: one thread is as fast as two and never thrashes when the
# machine is busy (notebook kernels and the browser tests' servers run beside the tests).
torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (README's test command: ``-n 2 --dist loadgroup``), the tests of a module
    that share a module-scoped fixture (a trained model, most often) run on one worker, so the
    fixture is built once rather than once per worker (SSCQ's three fits took 23 s on each)."""
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        if any(fd.scope == "module" for chain in defs for fd in chain):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


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
