"""Built-in datasets that never download: digits (scikit-learn's bundled copy), a seeded synthetic
Gaussian mixture, and Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package when installed."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataFileError
from ..validation import check_int
from .dataset import BUILTINS, Dataset  # noqa: F401  (BUILTINS: the names this module provides)
from .readers import read_idx

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def load_digits() -> Dataset:
    """scikit-learn's bundled digits (no download): 1,797 × 64 float32 in [0, 16], labels 0–9."""
    from sklearn.datasets import load_digits as _load
    bunch = _load()
    return Dataset("digits", bunch.data.astype(np.float32), bunch.target.astype(np.int64), image_shape=(8, 8))


def make_synthetic(n: int = 5000, d: int = 32, n_clusters: int = 20, *, spread: float = 0.5,
                   random_state: int = 0) -> Dataset:
    """A seeded Gaussian mixture: ``n_clusters`` centres ~ N(0, I_d), points = centre + spread·N(0, I_d).

    Returns ``n`` × ``d`` float32 vectors with their cluster as the label.
    """
    n = check_int(n, "n", low=1)
    d = check_int(d, "d", low=1)
    n_clusters = check_int(n_clusters, "n_clusters", low=1)
    rng = np.random.default_rng(random_state)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    labels = rng.integers(0, n_clusters, size=n)
    X = centres[labels] + spread * rng.standard_normal((n, d)).astype(np.float32)
    return Dataset("synthetic", X.astype(np.float32), labels.astype(np.int64))


def make_sift_like(n: int = 20000, d: int = 128, n_clusters: int = 64, *, rank: int = 16,
                   random_state: int = 0) -> np.ndarray:
    """A seeded SIFT-like set (n, d) float32: non-negative, clustered, correlated, integer-valued.

    SIFT descriptors are histograms of gradients: non-negative, mostly small with a few large
    bins, strongly correlated across bins, clustered by image content. Here: ``n_clusters``
    centres ``relu(A_c B)`` (A_c ~ N(0, I_rank), B (rank, d) shared, so bins co-vary), each point
    its centre plus ``relu``'d low-rank and isotropic noise, scaled so the largest coordinate is
    about 150 and rounded to integers as SIFT1M's bytes are. No labels; draw learn, base and
    queries from one call (disjoint rows) so they share the distribution.
    """
    n = check_int(n, "n", low=1)
    d = check_int(d, "d", low=1)
    n_clusters = check_int(n_clusters, "n_clusters", low=1)
    rank = check_int(rank, "rank", low=1)
    rng = np.random.default_rng(random_state)
    mix = rng.standard_normal((rank, d)) / np.sqrt(rank)
    centres = np.maximum(rng.standard_normal((n_clusters, rank)) @ mix, 0.0)
    labels = rng.integers(0, n_clusters, size=n)
    noise = 0.5 * rng.standard_normal((n, rank)) @ mix + 0.15 * rng.standard_normal((n, d))
    X = np.maximum(centres[labels] + noise, 0.0)
    X = np.rint(X * (150.0 / max(float(np.quantile(X, 0.999)), 1e-12)))
    return X.astype(np.float32)


def load_fashion_mnist(directory: str | os.PathLike = FASHION_MNIST_DIR) -> Dataset:
    """Fashion-MNIST's 70,000 images (train then test) as 784-d float32 in [0, 1], labels 0–9.

    Read from the IDX files of Debian's ``dataset-fashion-mnist``; never downloaded.
    """
    directory = Path(directory)
    parts = []
    for split in ("train", "t10k"):
        images = directory / f"{split}-images-idx3-ubyte.gz"
        labels = directory / f"{split}-labels-idx1-ubyte.gz"
        if not images.exists() or not labels.exists():
            raise DataFileError(
                f"Fashion-MNIST is not installed (no {images}); install it with "
                "'sudo apt-get install dataset-fashion-mnist' (listed in binder/apt.txt), "
                "or use --data digits"
            )
        parts.append((read_idx(images), read_idx(labels)))
    X = np.concatenate([p[0] for p in parts]).reshape(-1, 28 * 28).astype(np.float32) / 255.0
    y = np.concatenate([p[1] for p in parts]).astype(np.int64)
    return Dataset("fashion-mnist", X, y, image_shape=(28, 28))
