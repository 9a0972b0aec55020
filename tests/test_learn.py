"""`--learn PATH` (SIFT1M's layout): fit on the learn file, encode and evaluate the base, search
with the queries; `pqx train` and `pqx sweep` fit on the same learn rows, and a bad learn file
is refused with one line."""
import json

import numpy as np
import pytest

from explorer import cli, data, methods
from explorer.errors import DataFileError
from explorer.report import evaluate


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """learn (600), base (900) and queries (50) drawn from one seeded SIFT-like set, 128-d."""
    tmp = tmp_path_factory.mktemp("sift")
    X = data.make_sift_like(1550, 128, n_clusters=16, random_state=5)
    for name, rows in (("learn", X[:600]), ("base", X[600:1500]), ("query", X[1500:])):
        data.write_vecs(tmp / f"{name}.fvecs", rows)
    return tmp, X


def test_sift_like_set_is_non_negative_integer_clustered_and_seeded():
    X = data.make_sift_like(3000, 128, random_state=0)
    assert X.dtype == np.float32 and X.shape == (3000, 128)
    assert X.min() == 0 and np.array_equal(X, np.rint(X)) and 100 < X.max() < 400
    assert np.array_equal(X, data.make_sift_like(3000, 128, random_state=0))
    # correlated bins: the top 16 principal directions hold most of the variance (SIFT: ~half)
    ev = np.linalg.eigvalsh(np.cov(X.T))[::-1]
    assert ev[:16].sum() / ev.sum() > 0.5


def test_train_fits_on_the_learn_file_and_evaluates_the_base(files, tmp_path):
    tmp, X = files
    out = tmp_path / "r.json"
    args = ["train", "--method", "pq", "-M", "4", "-K", "16", "--iters", "4", "--seed", "1", "--quiet",
            "--data", str(tmp / "base.fvecs"), "--queries", str(tmp / "query.fvecs")]
    assert cli.main(args + ["--learn", str(tmp / "learn.fvecs"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["n_train"], report["n_base"], report["n_queries"]) == (600, 900, 50)
    ds = data.Dataset("base", X[600:1500], queries=X[1500:])
    pq = methods.create("pq", n_subspaces=4, n_codewords=16, n_iter=4, random_state=1).fit(X[:600])
    ev = evaluate(pq, ds)
    assert report["distortion"] == pytest.approx(ev["distortion"], rel=1e-6)  # measured on the base: held out
    assert report["recall_at"] == ev["recall_at"]
    # without --learn the fit sees the base: another model
    assert cli.main(args + ["--json", str(tmp_path / "own.json")]) == 0
    own = json.loads((tmp_path / "own.json").read_text())
    assert own["n_train"] == 900 and own["distortion"] < report["distortion"]  # in-sample is lower


def test_train_size_samples_the_learn_file_and_sweep_fits_the_same_rows(files, tmp_path):
    tmp, X = files
    common = ["--data", str(tmp / "base.fvecs"), "--queries", str(tmp / "query.fvecs"), "--learn",
              str(tmp / "learn.fvecs"), "--train-size", "300", "--seed", "2", "--quiet"]
    assert cli.main(["train", "--method", "pq", "-M", "2", "-K", "256", "--iters", "3", *common,
                     "--json", str(tmp_path / "t.json")]) == 0
    assert cli.main(["sweep", "--methods", "pq", "--bits", "16", "--references", "pq", "--iters", "3", *common,
                     "--json", str(tmp_path / "s.json")]) == 0
    report = json.loads((tmp_path / "t.json").read_text())
    rows = {r["method"]: r for r in json.loads((tmp_path / "s.json").read_text())}
    assert report["n_train"] == 300
    assert rows["pq"]["distortion"] == pytest.approx(report["distortion"], rel=1e-9)
    rows_ids = data.sample_rows(600, 300, 2)
    pq = methods.create("pq", n_subspaces=2, n_codewords=256, n_iter=3, random_state=2).fit(X[:600][rows_ids])
    assert report["distortion"] == pytest.approx(pq.embedding_distortion(X[600:1500]), rel=1e-6)
    # the faiss reference row trains on the learn sample too: its distortion is a held-out one
    from explorer.search import faiss_reference
    index = faiss_reference("pq", np.ascontiguousarray(X[:600][rows_ids]), 2, 256, seed=2)
    base = X[600:1500]
    expected = float(((base.astype(np.float64) - index.sa_decode(index.sa_encode(base))) ** 2).sum(1).mean())
    assert rows["faiss-pq"]["distortion"] == pytest.approx(expected, rel=1e-6)


def test_a_learn_file_of_another_dimension_is_refused(files, tmp_path, capsys):
    tmp, X = files
    data.write_vecs(tmp_path / "learn64.fvecs", X[:100, :64])
    with pytest.raises(DataFileError, match="learn vectors have shape"):
        data.load(tmp / "base.fvecs", learn=tmp_path / "learn64.fvecs")
    out = tmp_path / "r.json"
    code = cli.main(["train", "--method", "pq", "--data", str(tmp / "base.fvecs"), "--learn",
                     str(tmp_path / "learn64.fvecs"), "--quiet", "--json", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "learn64.fvecs" in err[0] and "d=128" in err[0]
    assert not out.exists()
    with pytest.raises(Exception, match="train_size=700 is out of range"):
        data.training_set(data.load(tmp / "base.fvecs", learn=tmp / "learn.fvecs"), 700)


def test_rlq_report_checks_its_policy_on_the_base_with_references_trained_on_the_learn_file(files, tmp_path):
    from explorer.methods.rlq import reference_rows
    tmp, X = files
    out = tmp_path / "r.json"
    assert cli.main(["train", "--method", "rlq", "-M", "2", "-K", "16", "--iters", "1", "--seed", "0", "--quiet",
                     "--data", str(tmp / "base.fvecs"), "--queries", str(tmp / "query.fvecs"),
                     "--learn", str(tmp / "learn.fvecs"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    check = report["policy_check"]
    assert check["trained"] == report["policy_distortion"]
    assert check["refined"] == pytest.approx(report["distortion"]) and check["refined"] <= check["greedy"]
    assert check["untrained"] == check["greedy"]  # distance prior + zero head: nearest-residual encoding
    ds = data.Dataset("base", X[600:1500], queries=X[1500:])
    expected = reference_rows(ds, 2, 16, kinds=("rq", "lsq"), train=X[:600])  # trained on the learn file
    assert check["rq"] == pytest.approx(expected["rq"]["distortion"], rel=1e-9)
    assert check["lsq"] == pytest.approx(expected["lsq"]["distortion"], rel=1e-9)
