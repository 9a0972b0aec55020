"""A user's own data: .npz and ann-benchmarks HDF5 files, separate query labels, as_dataset, and
the train --save → encode → search path of the CLI giving evaluate's ranking."""
import numpy as np
import pytest

from explorer import cli, data, methods, report
from explorer.errors import InvalidType


@pytest.fixture(scope="module")
def digits():
    return data.split_queries(data.load("digits"), 100, random_state=0)


def test_npz_named_arrays_make_a_dataset_with_its_queries_and_labels(digits, tmp_path):
    path = tmp_path / "own.npz"
    np.savez(path, base=digits.base, queries=digits.queries, labels=digits.labels, query_labels=digits.query_labels)
    ds = data.load(path)
    np.testing.assert_array_equal(ds.base, digits.base)
    np.testing.assert_array_equal(ds.queries, digits.queries)
    np.testing.assert_array_equal(ds.query_labels, digits.query_labels)
    q = methods.create("pq", n_subspaces=8, n_codewords=16, n_iter=3).fit(digits.base)
    assert report.evaluate(q, ds)["map"] == report.evaluate(q, digits)["map"] is not None


def test_npz_base_array_is_choosable(digits, tmp_path):
    path = tmp_path / "emb.npz"
    np.savez(path, embeddings=digits.base, other=digits.base[:10])
    with pytest.raises(ValueError, match="which array is the base.*embeddings, other.*--base-key"):
        data.load(path)
    assert data.load(path, base_key="embeddings").n == digits.n
    np.savez(tmp_path / "one.npz", vectors=digits.base[:50])
    assert data.load(tmp_path / "one.npz").n == 50  # the only array is the base


def _write_ann_hdf5(path, base, queries, neighbors, distance="euclidean"):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = distance
        f["train"], f["test"], f["neighbors"] = base, queries, neighbors
        f["distances"] = np.zeros(neighbors.shape, dtype=np.float32)


def test_hdf5_ann_benchmarks_ground_truth_is_used_as_given(digits, tmp_path):
    """The file's neighbors are the ground truth: a deliberately wrong one changes recall."""
    true_gt = data.ground_truth(digits, 100)
    _write_ann_hdf5(tmp_path / "ann.hdf5", digits.base, digits.queries, true_gt)
    shifted = np.roll(true_gt, 1, axis=0)  # each query gets another query's neighbours
    _write_ann_hdf5(tmp_path / "wrong.hdf5", digits.base, digits.queries, shifted)
    ds = data.load(tmp_path / "ann.hdf5")
    assert ds.metric == "l2" and ds.neighbors.shape == (100, 100)
    q = methods.create("pq", n_subspaces=8, n_codewords=16, n_iter=3).fit(ds.base)
    good = report.evaluate(q, ds)["recall_at"]
    assert good == report.evaluate(q, digits)["recall_at"]
    bad = report.evaluate(q, data.load(tmp_path / "wrong.hdf5"))["recall_at"]
    assert bad["10"] < good["10"] - 0.3


def test_hdf5_angular_distance_trains_cosine(digits, tmp_path):
    gt = data.ground_truth(digits, 10, metric="cosine")
    _write_ann_hdf5(tmp_path / "glove.hdf5", digits.base, digits.queries, gt, distance="angular")
    assert data.load(tmp_path / "glove.hdf5").metric == "cosine"
    out = tmp_path / "r.json"
    assert cli.main(["train", "--data", str(tmp_path / "glove.hdf5"), "-M", "8", "-K", "16", "--iters", "2",
                     "--quiet", "--json", str(out)]) == 0
    import json
    assert json.loads(out.read_text())["params"]["metric"] == "cosine"


def test_query_labels_file_enables_map(digits, tmp_path):
    np.save(tmp_path / "base.npy", np.asarray(digits.base))
    np.save(tmp_path / "q.npy", digits.queries)
    np.save(tmp_path / "y.npy", digits.labels)
    np.save(tmp_path / "yq.npy", digits.query_labels)
    ds = data.load(tmp_path / "base.npy", labels=tmp_path / "y.npy", queries=tmp_path / "q.npy",
                   query_labels=tmp_path / "yq.npy")
    q = methods.create("pq", n_subspaces=8, n_codewords=16, n_iter=3).fit(digits.base)
    assert report.evaluate(q, ds)["map"] == pytest.approx(report.evaluate(q, digits)["map"])
    without = data.load(tmp_path / "base.npy", labels=tmp_path / "y.npy", queries=tmp_path / "q.npy")
    assert report.evaluate(q, without)["map"] is None


def test_as_dataset_takes_an_array_a_dataset_or_a_path(digits, tmp_path):
    assert data.as_dataset(digits) is digits
    from_array = data.as_dataset(np.asarray(digits.base).tolist(), labels=digits.labels)
    np.testing.assert_array_equal(from_array.base, digits.base)
    np.save(tmp_path / "v.npy", np.asarray(digits.base))
    assert data.as_dataset(tmp_path / "v.npy").n == digits.n
    assert data.as_dataset("digits").n == 1797
    import torch
    assert data.as_dataset(torch.ones(5, 4)).base.shape == (5, 4)
    with pytest.raises(InvalidType, match="data has type dict; pass an array of vectors"):
        data.as_dataset({"x": 1})


def test_train_save_encode_search_gives_evaluates_ranking(digits, tmp_path, capsys):
    np.save(tmp_path / "base.npy", np.asarray(digits.base))
    np.save(tmp_path / "q.npy", digits.queries)
    model = tmp_path / "m.pqx"
    assert cli.main(["train", "--method", "opq", "--data", str(tmp_path / "base.npy"), "--queries", str(tmp_path / "q.npy"),
                     "-M", "8", "-K", "16", "--iters", "3", "--quiet", "--save", str(model)]) == 0
    assert cli.main(["encode", "--model", str(model), "--data", str(tmp_path / "base.npy"), "--out",
                     str(tmp_path / "codes.npy"), "--batch-size", "300", "--quiet"]) == 0
    assert cli.main(["search", "--model", str(model), "--codes", str(tmp_path / "codes.npy"), "--queries",
                     str(tmp_path / "q.npy"), "-k", "100", "--block", "7", "--out", str(tmp_path / "ids.npy"),
                     "--distances", str(tmp_path / "d.npy"), "--quiet"]) == 0
    import explorer
    q = explorer.load(model)
    codes = np.load(tmp_path / "codes.npy")
    np.testing.assert_array_equal(codes, report.evaluate(q, digits)["codes"])
    d, ids = q.search(digits.queries, codes, 100)  # evaluate's ranking (ties by id)
    np.testing.assert_array_equal(np.load(tmp_path / "ids.npy"), ids)
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"), d, rtol=1e-6)


def test_method_help_shows_that_methods_flags_in_groups(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--method", "dpq", "--help"])
    text = capsys.readouterr().out
    assert "deep methods (dpq, fppq, sscq):" in text and "dpq options:" in text and "--no-gini" in text
    assert "--lambda-cd" not in text and "--init" not in text and "OPT_" not in text
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert "sscq options:" in text and "--lambda-cd LAMBDA_CD" in text and "--metric {l2,ip,cosine}" in text
    assert "OPT_" not in text


def test_a_flag_two_methods_share_lists_each_ones_values_and_meaning(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--init {random,narrow,residual,joint}" in text
    assert "pq: codebook initialisation" in text and "rlq: how the codebooks start" in text
