"""Property-based tests (hypothesis): readers round-trip what the writers wrote, for random
shapes and values; codes round-trip through decode/encode; decode(encode(x)) is the nearest
reconstruction the codebooks can express; batched encoding equals one-shot encoding."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from explorer import data, methods

SETTINGS = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
shapes = st.tuples(st.integers(1, 40), st.integers(1, 24))
finite32 = st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(st.data(), shapes, st.sampled_from([(".fvecs", np.float32), (".ivecs", np.int32), (".bvecs", np.uint8)]))
def test_vecs_round_trip(tmp_path_factory, draw, shape, fmt):
    ext, dtype = fmt
    elements = finite32 if dtype == np.float32 else st.integers(np.iinfo(dtype).min, np.iinfo(dtype).max)
    X = draw.draw(arrays(dtype, shape, elements=elements))
    path = tmp_path_factory.mktemp("vecs") / f"x{ext}"
    data.write_vecs(path, X)
    back = data.read_vectors(path)
    assert back.dtype == dtype and back.shape == shape
    np.testing.assert_array_equal(back, X)
    loaded = data.load(str(path))  # the entry point keeps it as it is (memory map)
    np.testing.assert_array_equal(loaded.base, X)


IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@SETTINGS
@given(st.data(), st.sampled_from(IDX_DTYPES), st.lists(st.integers(1, 7), min_size=1, max_size=3), st.booleans())
def test_idx_round_trip(tmp_path_factory, draw, dtype, shape, gz):
    dtype = np.dtype(dtype)
    elements = (st.floats(-1e6, 1e6, width=dtype.itemsize * 8, allow_nan=False) if dtype.kind == "f"
                else st.integers(np.iinfo(dtype).min, np.iinfo(dtype).max))
    A = draw.draw(arrays(dtype, tuple(shape), elements=elements))
    path = tmp_path_factory.mktemp("idx") / ("x-idx-ubyte.gz" if gz else "x-idx-ubyte")
    data.write_idx(path, A)
    back = data.read_idx(path)
    assert back.dtype == dtype and back.shape == A.shape
    np.testing.assert_array_equal(back, A)


@SETTINGS
@given(st.data(), shapes)
def test_npy_round_trip(tmp_path_factory, draw, shape):
    X = draw.draw(arrays(np.float32, shape, elements=finite32))
    path = tmp_path_factory.mktemp("npy") / "x.npy"
    np.save(path, X)
    np.testing.assert_array_equal(data.load(str(path)).base, X)


# --------------------------------------------------------------------------- codes
M, K, D = 4, 16, 12


@pytest.fixture(scope="module")
def quantizers():
    X = data.make_synthetic(n=600, d=D, n_clusters=30, random_state=1).base
    return {name: methods.create(name, n_subspaces=M, n_codewords=K, n_iter=4, random_state=0).fit(X)
            for name in ("pq", "opq")}


codes_strategy = arrays(np.int64, st.tuples(st.integers(1, 30), st.just(M)), elements=st.integers(0, K - 1))
vectors_strategy = arrays(np.float32, st.tuples(st.integers(1, 30), st.just(D)),
                          elements=st.floats(-4, 4, width=32, allow_nan=False))


@SETTINGS
@given(codes=codes_strategy)
def test_pq_encode_of_decode_returns_the_codes(quantizers, codes):
    q = quantizers["pq"]
    np.testing.assert_array_equal(q.encode(q.decode(codes)), codes)


@SETTINGS
@given(X=vectors_strategy, name=st.sampled_from(["pq", "opq"]))
def test_decode_of_encode_is_the_nearest_reconstruction(quantizers, X, name):
    """||x − decode(encode(x))||² equals the minimum over all K^M codes, found subspace by subspace
    (rotations preserve distances, so for OPQ the minimum is taken in the rotated space)."""
    q = quantizers[name]
    err = ((X.astype(np.float64) - q.decode(q.encode(X))) ** 2).sum(1)
    Z = q.transform(X).astype(np.float64).reshape(len(X), M, 1, -1)
    best = ((Z - q.codebooks_.astype(np.float64)[None]) ** 2).sum(-1).min(-1).sum(-1)  # (n,)
    np.testing.assert_allclose(err, best, rtol=1e-4, atol=1e-4)


@SETTINGS
@given(X=vectors_strategy, batch=st.integers(1, 31), name=st.sampled_from(["pq", "opq"]))
def test_batched_encoding_equals_one_shot(quantizers, X, batch, name):
    q = quantizers[name]
    np.testing.assert_array_equal(q.encode(X, batch_size=batch), q.encode(X))
