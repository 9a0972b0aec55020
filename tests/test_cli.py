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
