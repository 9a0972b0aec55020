"""`pqx train`: the JSON report contract, file inputs, and one-line errors with no partial output."""
import json
import subprocess
import sys

import numpy as np
import pytest

from explorer import cli, data

REPORT_KEYS = {"method", "dataset", "n_base", "n_queries", "dim", "subspaces", "codewords", "bits", "distortion",
               "recall_at", "map", "usage", "perplexity", "dead_codes", "collapsed", "history", "fit_seconds",
               "encode_seconds"}


def test_train_on_digits_writes_the_report(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert cli.main(["train", "--method", "pq", "-M", "8", "-K", "256", "--iters", "10", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert REPORT_KEYS <= set(report)
    assert (report["method"], report["dataset"], report["n_base"], report["n_queries"], report["dim"]) == \
        ("pq", "digits", 1597, 200, 64)
    assert (report["subspaces"], report["codewords"], report["bits"]) == (8, 256, 64)
    assert set(report["recall_at"]) == {"1", "10", "100"} and report["recall_at"]["10"] > 0.9
    assert 0 < report["map"] <= 1
    assert np.array(report["usage"]).shape == (8, 256) and np.array(report["usage"]).sum() == 8 * 1597
    assert len(report["perplexity"]) == len(report["dead_codes"]) == len(report["collapsed"]) == 8
    assert not any(report["collapsed"])
    assert [h["step"] for h in report["history"]] == list(range(1, 11))
    assert report["history"][-1]["loss"] < report["history"][0]["loss"]
    assert {"step", "loss", "perplexity_mean"} <= set(report["history"][0])
    assert "distortion" in capsys.readouterr().out


def test_train_on_an_fvecs_file_holds_out_queries(tmp_path):
    X = data.load("synthetic", n=1200, d=16, n_clusters=10).base
    data.write_vecs(tmp_path / "base.fvecs", X)
    out = tmp_path / "r.json"
    assert cli.main(["train", "--method", "opq", "--data", str(tmp_path / "base.fvecs"), "-M", "4", "-K", "16",
                     "--iters", "3", "--n-queries", "100", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert (report["dataset"], report["n_base"], report["n_queries"], report["dim"]) == ("base", 1100, 100, 16)
    assert report["map"] is None  # no labels given


def _run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "explorer.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args,words", [
    (["-M", "7"], "n_subspaces (M)=7 does not divide"),
    (["--method", "nope"], "unknown method 'nope'"),
    (["--data", "/no/such.fvecs"], "no such file"),
    (["--no-repair", "--method", "opq"], "--no-repair does not apply to method 'opq'"),
    (["--epochs", "3"], "--epochs does not apply to method 'pq'"),
    (["-K", "100000"], "n_codewords"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_input_exits_2_with_one_line_and_no_output_file(tmp_path, args, words):
    out = tmp_path / "r.json"
    proc = _run("train", *args, "--json", str(out), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("with_queries_file", [True, False])
def test_train_size_fits_on_the_same_sample_as_an_in_memory_fit(tmp_path, with_queries_file):
    """`--train-size N` on an .fvecs file gives the codebooks (and report) of fitting the same
    seeded N rows in memory, with a queries file and with queries held out of the file."""
    from explorer import methods
    from explorer.checkpoint import load_checkpoint
    from explorer.report import evaluate
    full = data.load("synthetic", n=1500, d=16, n_clusters=10, random_state=2)
    data.write_vecs(tmp_path / "base.fvecs", full.base[:1300])
    data.write_vecs(tmp_path / "queries.fvecs", full.base[1300:])
    queries = ["--queries", str(tmp_path / "queries.fvecs")] if with_queries_file else ["--n-queries", "100"]
    out = tmp_path / "r.json"
    assert cli.main(["train", "--method", "pq", "--data", str(tmp_path / "base.fvecs"), *queries, "--train-size", "400",
                     "-M", "4", "-K", "16", "--iters", "4", "--seed", "7", "--checkpoint", str(tmp_path / "ck"),
                     "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())

    in_memory = data.Dataset("base", full.base[:1300], queries=full.base[1300:])
    if not with_queries_file:
        in_memory = data.split_queries(data.Dataset("base", full.base[:1300]), 100, random_state=7)
    rows = data.sample_rows(in_memory.n, 400, random_state=7)
    pq = methods.create("pq", n_subspaces=4, n_codewords=16, n_iter=4, random_state=7).fit(in_memory.base[rows])
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "ck")["arrays"]["codebooks_"], pq.codebooks_)
    ev = evaluate(pq, in_memory)
    assert (report["n_train"], report["n_base"], report["n_queries"]) == (400, in_memory.n, len(in_memory.queries))
    assert report["usage"] == ev["usage"].tolist() and report["recall_at"] == ev["recall_at"]
    assert report["distortion"] == pytest.approx(ev["distortion"], rel=1e-6)
    # a different sample (another seed) gives other codebooks: the comparison can fail
    other = methods.create("pq", n_subspaces=4, n_codewords=16, n_iter=4, random_state=7)
    assert not np.array_equal(other.fit(in_memory.base[data.sample_rows(in_memory.n, 400, 8)]).codebooks_, pq.codebooks_)
