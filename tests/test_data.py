"""Datasets and readers: built-ins, round trips of files the tests write, clear errors on bad files."""
import gzip
import mmap

import numpy as np
import pytest

from explorer import data
from explorer.errors import DataFileError, InvalidParameter


def test_digits_is_the_bundled_set():
    ds = data.load("digits")
    assert ds.base.shape == (1797, 64) and ds.base.dtype == np.float32
    assert ds.labels.shape == (1797,) and set(np.unique(ds.labels)) == set(range(10))
    assert ds.image_shape == (8, 8)


def test_synthetic_is_seeded_and_configurable():
    a = data.load("synthetic", n=500, d=16, n_clusters=7, random_state=3)
    b = data.load("synthetic", n=500, d=16, n_clusters=7, random_state=3)
    np.testing.assert_array_equal(a.base, b.base)
    assert a.base.shape == (500, 16) and a.labels.max() < 7
    assert not np.array_equal(a.base, data.load("synthetic", n=500, d=16, n_clusters=7, random_state=4).base)


@pytest.mark.parametrize("ext,dtype", [(".fvecs", np.float32), (".ivecs", np.int32), (".bvecs", np.uint8)])
def test_vecs_round_trip_and_memory_map(tmp_path, ext, dtype):
    X = (np.random.default_rng(0).random((50, 12)) * 200).astype(dtype)
    path = tmp_path / f"x{ext}"
    data.write_vecs(path, X)
    assert path.stat().st_size == 50 * (4 + 12 * np.dtype(dtype).itemsize)
    Y = data.read_vectors(path)
    np.testing.assert_array_equal(Y, X)
    assert _is_memory_mapped(Y)  # not read whole


def _is_memory_mapped(a) -> bool:
    while a is not None:
        if isinstance(a, (np.memmap, mmap.mmap)):
            return True
        a = getattr(a, "base", None)
    return False


def test_truncated_and_inconsistent_vecs_files_are_named(tmp_path):
    path = tmp_path / "bad.fvecs"
    data.write_vecs(path, np.ones((10, 8), dtype=np.float32))
    raw = path.read_bytes()
    path.write_bytes(raw[:-3])
    with pytest.raises(DataFileError, match=r"bad\.fvecs.*truncated"):
        data.read_vectors(path)
    rec = bytearray(raw)
    rec[36 * 3:36 * 3 + 4] = np.array([7], dtype="<i4").tobytes()  # record 3 says d=7
    path.write_bytes(bytes(rec))
    with pytest.raises(DataFileError, match="inconsistent dimensions"):
        data.read_vectors(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataFileError, match="too short"):
        data.read_vectors(path)
    path.write_bytes(np.array([-5], dtype="<i4").tobytes() * 4)
    with pytest.raises(DataFileError, match="dimension -5"):
        data.read_vectors(path)


@pytest.mark.parametrize("name", ["imgs-idx3-ubyte", "imgs-idx3-ubyte.gz"])
def test_idx_round_trip_plain_and_gzipped(tmp_path, name):
    imgs = np.random.default_rng(1).integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    path = tmp_path / name
    data.write_idx(path, imgs)
    np.testing.assert_array_equal(data.read_idx(path), imgs)
    assert data.read_vectors(path).shape == (20, 784)


def test_bad_idx_files(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(b"\x12\x34\x08\x01")
    with pytest.raises(DataFileError, match="magic"):
        data.read_idx(path)
    data.write_idx(path, np.arange(10, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(DataFileError, match="truncated"):
        data.read_idx(path)
    gz = tmp_path / "y-idx1-ubyte.gz"
    gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abcde")[:-6])
    with pytest.raises(DataFileError, match="y-idx1-ubyte.gz"):
        data.read_idx(gz)


def test_npy_and_load_with_labels_and_queries(tmp_path):
    X = np.random.default_rng(2).random((40, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", np.arange(40) % 3)
    data.write_vecs(tmp_path / "q.fvecs", X[:5])
    ds = data.load(tmp_path / "x.npy", labels=tmp_path / "y.npy", queries=tmp_path / "q.fvecs")
    np.testing.assert_array_equal(ds.base, X)
    assert ds.labels.tolist()[:4] == [0, 1, 2, 0] and ds.queries.shape == (5, 6)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataFileError, match="junk.npy"):
        data.load(tmp_path / "junk.npy")
    np.save(tmp_path / "short.npy", np.arange(3))
    with pytest.raises(InvalidParameter, match="labels"):
        data.load(tmp_path / "x.npy", labels=tmp_path / "short.npy")


def test_unknown_names_and_missing_files():
    with pytest.raises(InvalidParameter, match="unknown dataset 'digitz'"):
        data.load("digitz")
    with pytest.raises(DataFileError, match="no such file"):
        data.load("/nonexistent/base.fvecs")


def test_fashion_mnist_reads_debian_package_or_says_how_to_install(tmp_path):
    with pytest.raises(DataFileError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist(tmp_path)
    # the same reader on files laid out like the Debian package's
    for split, n in (("train", 6), ("t10k", 4)):
        data.write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", np.full((n, 28, 28), 255, np.uint8))
        data.write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8))
    ds = data.load_fashion_mnist(tmp_path)
    assert ds.base.shape == (10, 784) and ds.base.max() == 1.0 and ds.image_shape == (28, 28)


def test_split_queries_and_ground_truth():
    ds = data.load("digits")
    split = data.split_queries(ds, 100, random_state=0)
    assert split.n == 1697 and split.queries.shape == (100, 64) and len(split.query_labels) == 100
    gt = data.ground_truth(split, k=5)
    brute = ((split.queries[:, None, :] - split.base[None]) ** 2).sum(-1).argsort(axis=1)[:, :1]
    assert (gt[:, :1] == brute).mean() > 0.97  # equal up to ties between identical digits
    with pytest.raises(InvalidParameter, match="n_queries"):
        data.split_queries(ds, 1797)


def test_split_of_a_memory_mapped_file_skips_the_queries_without_copying_the_base(tmp_path):
    """Held-out queries leave a memory-mapped base lazily (a RowsExcept view, no copy), and the
    split sees the same rows, labels and queries, in the same order, as the in-memory split."""
    ds = data.load("synthetic", n=600, d=8, n_clusters=5, random_state=1)
    data.write_vecs(tmp_path / "base.fvecs", ds.base)
    np.save(tmp_path / "labels.npy", ds.labels)
    on_disk = data.split_queries(data.load(tmp_path / "base.fvecs", labels=tmp_path / "labels.npy"), 70, random_state=4)
    in_memory = data.split_queries(ds, 70, random_state=4)
    assert isinstance(on_disk.base, data.RowsExcept) and data.is_memory_mapped(on_disk.base)
    assert not data.is_memory_mapped(in_memory.base) and isinstance(in_memory.base, np.ndarray)  # digits/synthetic: as before
    assert on_disk.n == in_memory.n == 530 and on_disk.dim == 8 and len(on_disk.base.excluded) == 70
    np.testing.assert_array_equal(np.asarray(on_disk.base), in_memory.base)
    np.testing.assert_array_equal(on_disk.queries, in_memory.queries)
    np.testing.assert_array_equal(on_disk.labels, in_memory.labels)
    np.testing.assert_array_equal(on_disk.query_labels, in_memory.query_labels)
    # slices (any step), integer and boolean rows, negative ids and a column part read the same rows
    for key in (slice(100, 260), slice(None, None, 7), slice(-5, None), np.array([0, 529, 3, 3, -1]),
                np.arange(530) % 3 == 0, 17, (slice(10, 20), slice(2, 5))):
        np.testing.assert_array_equal(on_disk.base[key], in_memory.base[key])
    with pytest.raises(IndexError):
        on_disk.base[np.array([530])]


def test_sample_rows_is_seeded_sorted_and_without_repeats():
    rows = data.sample_rows(1000, 300, random_state=5)
    assert rows.shape == (300,) and len(np.unique(rows)) == 300 and (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(rows, data.sample_rows(1000, 300, random_state=5))
    assert not np.array_equal(rows, data.sample_rows(1000, 300, random_state=6))
