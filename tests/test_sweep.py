"""The sweep: rows equal single ``pqx train`` runs, faiss rows equal faiss called directly (also
when the base is read in batches from a memory map), failed combinations become error rows, and
``pqx sweep`` writes the promised JSON and CSV."""
from __future__ import annotations

import csv
import json
from dataclasses import replace

import faiss
import numpy as np
import pytest

from explorer import data, metrics
from explorer.cli import main
from explorer.errors import InvalidParameter
from explorer.events import StopSignal
from explorer.methods import create, get
from explorer.search import evaluate_faiss, faiss_reference, native_stderr_silenced
from explorer.sweep import CSV_COLUMNS, ROW_KEYS, SweepRow, parse_methods, quantizer_row, run_reference, sweep
from watched_rows import WatchedRows, mapped_digits


def test_grid_for_bits_default_is_one_byte_per_subspace():
    assert get("pq").grid_for_bits(32, 64) == {"n_subspaces": 4, "n_codewords": 256}
    assert get("opq").grid_for_bits(128, 128) == {"n_subspaces": 16, "n_codewords": 256}
    for bad in (12, 0, -8, 8.0):
        with pytest.raises(InvalidParameter, match="bits"):
            get("pq").grid_for_bits(bad, 64)


@pytest.mark.parametrize("name, lengths, bad", [
    ("pq", (16, 24, 32, 64, 128), 12), ("opq", (16, 32, 64), 20),
    ("dpq", (12, 16, 24, 32, 48, 64, 128), 20),  # K=64 at multiples of 6 (CIFAR-10), else K=256 (ImageNet)
    ("fppq", (16, 24, 32, 64, 128), 12), ("rlq", (16, 32, 64, 128), 4), ("sscq", (12, 16, 32, 64), 18)])
def test_each_methods_grid_gives_the_requested_bits(name, lengths, bad):
    for bits in lengths:
        grid = get(name).grid_for_bits(bits, 64)
        quantizer = create(name, **grid)
        assert quantizer.bits == bits, (name, bits, grid)
        if "embedding_dim" in grid:  # deep methods split D into M sub-vectors
            assert quantizer._embedding_size() % quantizer.n_subspaces == 0
    with pytest.raises(InvalidParameter, match=f"bits={bad}"):
        get(name).grid_for_bits(bad, 64)


def test_grids_follow_the_papers():
    assert get("sscq").grid_for_bits(32, 64) == {"n_subspaces": 8, "n_codewords": 16, "embedding_dim": 128}
    assert get("dpq").grid_for_bits(24, 64)["n_codewords"] == 64 and get("dpq").grid_for_bits(64, 64)["n_codewords"] == 256
    assert get("fppq").grid_for_bits(24, 64)["embedding_dim"] == 63  # rounded down to a multiple of M=3


def test_rows_equal_single_pqx_train_runs(tmp_path):
    out = tmp_path / "sweep.json"
    assert main(["sweep", "--methods", "pq,opq", "--bits", "16", "--references", "none", "--iters", "4",
                 "--seed", "0", "--quiet", "--json", str(out)]) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())}
    for method in ("pq", "opq"):
        report_path = tmp_path / f"{method}.json"
        assert main(["train", "--method", method, "-M", "2", "-K", "256", "--iters", "4", "--seed", "0", "--quiet",
                     "--json", str(report_path)]) == 0
        report = json.loads(report_path.read_text())
        row = rows[method]
        assert (row["subspaces"], row["codewords"], row["bits"]) == (report["subspaces"], report["codewords"], 16)
        assert row["distortion"] == pytest.approx(report["distortion"], rel=1e-9)
        assert row["recall_at"] == report["recall_at"]
        assert row["map"] == pytest.approx(report["map"], rel=1e-9)
        assert row["reference"] is False
        assert row["collapsed_subspaces"] == sum(report["collapsed"])


def test_train_size_rows_equal_pqx_train_with_the_same_train_size(tmp_path):
    """`pqx sweep --train-size 300` fits every run on the sample `pqx train --train-size 300` fits
    on (same seed), on a memory-mapped file: the rows equal those reports, and differ from
    fitting on the whole base; the faiss reference trains on that sample too."""
    from explorer import data
    ds = data.load("digits")
    data.write_vecs(tmp_path / "base.fvecs", ds.base)
    np.save(tmp_path / "labels.npy", ds.labels)
    files = ["--data", str(tmp_path / "base.fvecs"), "--labels", str(tmp_path / "labels.npy"), "--seed", "3"]
    out = tmp_path / "sweep.json"
    assert main(["sweep", "--methods", "pq,opq", "--bits", "16", "--references", "pq", "--iters", "4", *files,
                 "--train-size", "300", "--quiet", "--json", str(out)]) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())}
    for method in ("pq", "opq"):
        reports = {}
        for size in (["--train-size", "300"], []):
            report_path = tmp_path / f"{method}{len(size)}.json"
            assert main(["train", "--method", method, "-M", "2", "-K", "256", "--iters", "4", *files, *size,
                         "--quiet", "--json", str(report_path)]) == 0
            reports[len(size)] = json.loads(report_path.read_text())
        row, report = rows[method], reports[2]
        assert report["n_train"] == 300
        assert row["distortion"] == pytest.approx(report["distortion"], rel=1e-9)
        assert row["recall_at"] == report["recall_at"]
        assert row["map"] == pytest.approx(report["map"], rel=1e-9)
        assert row["distortion"] != pytest.approx(reports[0]["distortion"], rel=1e-6)  # not a fit on all 1,597
    sweep_ds = data.split_queries(data.load(tmp_path / "base.fvecs", labels=tmp_path / "labels.npy"), 200, random_state=3)
    X, _ = data.training_set(sweep_ds, 300, 3)
    index = faiss_reference("pq", np.ascontiguousarray(X, dtype=np.float32), 2, 256, seed=3)
    base = np.ascontiguousarray(sweep_ds.base, dtype=np.float32)
    codes = index.sa_encode(base)
    expected = float(((base.astype(np.float64) - index.sa_decode(codes)) ** 2).sum(axis=1).mean())
    assert rows["faiss-pq"]["distortion"] == pytest.approx(expected, rel=1e-6)


def test_sweep_refuses_a_train_size_above_the_base_before_training(digits):
    with pytest.raises(InvalidParameter, match="train_size=5000 is out of range; it must be in"):
        sweep(digits, ["pq"], [16], references=(), train_size=5000)


def test_reference_rows_equal_faiss_called_directly(digits):
    rows = {r["method"]: r for r in sweep(digits, [], [16], references=("pq", "opq", "rq"), random_state=0)}
    base, queries = digits.base, digits.queries
    gt = faiss.knn(queries, base, 1)[1]
    pq = faiss.IndexPQ(64, 2, 8)
    pq.pq.cp.seed, pq.pq.cp.niter = 0, 25
    direct = {"faiss-pq": pq,
              "faiss-opq": faiss.IndexPreTransform(faiss.OPQMatrix(64, 2), faiss.IndexPQ(64, 2, 8)),
              "faiss-rq": faiss.IndexResidualQuantizer(64, 2, 8)}
    for name, index in direct.items():
        index.train(base)
        recon = index.sa_decode(index.sa_encode(base))
        distortion = float(((base.astype(np.float64) - recon) ** 2).sum(1).mean())
        index.add(base)
        ranking = index.search(queries, len(base))[1]
        row = rows[name]
        assert row["reference"] is True and (row["subspaces"], row["codewords"]) == (2, 256)
        assert row["distortion"] == pytest.approx(distortion, rel=1e-6)
        assert row["recall_at"] == metrics.recalls(ranking, gt)
        assert row["map"] == pytest.approx(metrics.mean_average_precision(ranking, digits.query_labels, digits.labels))


@pytest.fixture(scope="module")
def trained_on_digits(digits):
    """{kind: faiss index trained on the digits base as run_reference trains it (M=2, K=256, seed 0)}, empty."""
    with native_stderr_silenced():
        return {kind: faiss_reference(kind, digits.base, 2, 256, seed=0) for kind in ("pq", "rq")}


@pytest.mark.parametrize("kind", ["pq", "rq"])
@pytest.mark.parametrize("batch_size, map_block", [(1, 1), (300, 7)])
def test_faiss_measured_in_batches_equals_one_faiss_call(digits, trained_on_digits, kind, batch_size, map_block):
    """evaluate_faiss reading the base 1 or 300 rows at a time (of 1,597) and ranking it for 1 or 7
    queries at a time gives what one faiss call over everything gives: the same codes, recall and
    first 100 ids (RQ: the whole ranking), the distortion to float64 summation order (rel 1e-12),
    mAP to 1e-6 — faiss's PQ builds the distance tables of a call's queries in one BLAS product,
    whose last float32 bits depend on how many queries it holds, so near-tied items may swap."""
    base, queries = digits.base, digits.queries
    one_call = faiss.clone_index(trained_on_digits[kind])
    codes = one_call.sa_encode(base)
    distortion = float(((base.astype(np.float64) - one_call.sa_decode(codes)) ** 2).sum(axis=1).mean())
    one_call.add(base)
    distances, ranking = one_call.search(queries, len(base))

    index = faiss.clone_index(trained_on_digits[kind])
    got = evaluate_faiss(index, base, queries, query_labels=digits.query_labels, base_labels=digits.labels,
                         batch_size=batch_size, map_block=map_block)
    np.testing.assert_array_equal(got["codes"], codes)
    assert index.ntotal == len(base)
    assert got["distortion"] == pytest.approx(distortion, rel=1e-12)
    gt = faiss.knn(queries, base, 1)[1]
    assert got["ranking"].shape == (len(queries), 100)
    assert metrics.recalls(got["ranking"], gt) == metrics.recalls(ranking, gt)
    assert got["map"] == pytest.approx(metrics.mean_average_precision(ranking, digits.query_labels, digits.labels),
                                       abs=1e-6)
    if kind == "rq":  # each query's distances are computed on their own: the rankings are the same
        np.testing.assert_array_equal(got["ranking"], ranking[:, :100])
    else:  # items may swap only with one at the same distance, to float32 rounding
        rank_of = np.argsort(ranking, axis=1)  # rank_of[q, id]: the id's rank in the one-call ranking
        got_distances = np.take_along_axis(distances, np.take_along_axis(rank_of, got["ranking"], axis=1), axis=1)
        np.testing.assert_allclose(got_distances, distances[:, :100], rtol=1e-5)


@pytest.fixture(scope="module")
def digits_on_disk(tmp_path_factory, digits):
    """The digits split with its base on disk behind WatchedRows (queries skipped in the memory map)."""
    mapped = mapped_digits(tmp_path_factory.mktemp("digits"))
    np.testing.assert_array_equal(mapped.queries, digits.queries)
    return replace(mapped, name=digits.name, base=WatchedRows(mapped.base.array, mapped.base.excluded))


@pytest.mark.parametrize("kind", ["pq", "opq", "rq"])
def test_reference_row_reads_a_mapped_base_one_batch_at_a_time(digits, digits_on_disk, monkeypatch, kind):
    """run_reference with --train-size reads the base it trains on once (the 500 sampled rows)
    and then at most ``batch_size`` rows at a time, never all of it (WatchedRows refuses), and
    ranks it for at most ``map_block`` queries at a time; its row equals the row of the same
    split in memory measured in one batch and one block of queries."""
    watched = digits_on_disk
    gt = data.ground_truth(digits, 100)
    expected = run_reference(kind, 16, digits, gt, random_state=0, train_size=500)  # 1 batch, 1 query block

    blocks, score = [], metrics.map_in_blocks
    def spy(rankings, *args, **kwargs):
        return score((blocks.append(r.shape) or r for r in rankings), *args, **kwargs)
    monkeypatch.setattr(metrics, "map_in_blocks", spy)
    watched.base.reads.clear()
    got = run_reference(kind, 16, watched, gt, random_state=0, train_size=500, batch_size=300, map_block=7)

    assert "error" not in got, got.get("error")
    reads = watched.base.reads
    assert reads[0] == 500 and max(reads[1:]) == 300 and sum(reads[1:]) == len(watched.base)
    assert {b[0] for b in blocks} == {7, 200 % 7} and {b[1] for b in blocks} == {len(watched.base)}
    timing = ("fit_seconds", "encode_seconds")
    assert got["distortion"] == pytest.approx(expected["distortion"], rel=1e-12)
    assert got["map"] == pytest.approx(expected["map"], abs=1e-6)
    same = ("distortion", "map", *timing)
    assert {k: v for k, v in got.items() if k not in same} == {k: v for k, v in expected.items() if k not in same}


def test_impossible_combinations_become_error_rows_and_the_sweep_goes_on(digits):
    rows = sweep(digits, ["pq"], [24, 12, 16], references=("pq",), overrides={"n_iter": 2})
    assert [(r["method"], r["bits"]) for r in rows] == [("pq", 24), ("faiss-pq", 24), ("pq", 12), ("faiss-pq", 12),
                                                        ("pq", 16), ("faiss-pq", 16)]
    for row in rows[:4]:
        assert set(ROW_KEYS) <= set(row) and row["distortion"] is None and row["recall_at"]["1"] is None
    assert "does not divide" in rows[0]["error"] and "multiple of 8" in rows[2]["error"]
    assert all("error" not in r and r["distortion"] > 0 for r in rows[4:])


def test_rows_stream_as_events_and_stop_ends_the_sweep(digits):
    seen, stop = [], StopSignal()

    def listener(event):
        seen.append(event)
        stop.set()  # ask to stop after the first finished run

    rows = sweep(digits, ["pq", "opq"], [16, 32], references=(), overrides={"n_iter": 2}, callbacks=[listener], stop=stop)
    assert len(rows) == 1 and len(seen) == 1
    event = seen[0]
    assert isinstance(event, SweepRow) and event.kind == "sweep_row" and event.row is rows[0]
    assert event.quantizer is not None and event.quantizer.n_subspaces == 2
    assert event.events is None  # nothing recorded unless record_steps asks
    assert json.loads(json.dumps(event.to_dict())) == {"kind": "sweep_row", "row": rows[0]}


def test_cli_writes_json_list_and_csv(tmp_path):
    js, cs = tmp_path / "rows.json", tmp_path / "rows.csv"
    assert main(["sweep", "--methods", "pq", "--bits", "16,32", "--references", "pq", "--iters", "2",
                 "--data", "synthetic", "--n-queries", "50", "--quiet", "--json", str(js), "--csv", str(cs)]) == 0
    rows = json.loads(js.read_text())
    assert [(r["method"], r["bits"], r["reference"]) for r in rows] == [
        ("pq", 16, False), ("faiss-pq", 16, True), ("pq", 32, False), ("faiss-pq", 32, True)]
    assert all(set(ROW_KEYS) <= set(r) and set(r["recall_at"]) == {"1", "10", "100"} for r in rows)
    assert all(r["map"] is not None for r in rows)  # synthetic data has labels
    with open(cs) as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == list(CSV_COLUMNS) and len(table) == 4
    assert float(table[2]["recall_at_10"]) == rows[2]["recall_at"]["10"]


@pytest.mark.parametrize("argv, message", [
    (["--methods", "pq,nope"], "unknown 'nope'"),
    (["--bits", "16,x"], "not an integer"),
    (["--references", "ivf"], "unknown 'ivf'"),
    (["--data", "no/such/file.fvecs"], "no such file"),
])
def test_cli_bad_input_exits_2_with_one_line_and_no_file(tmp_path, capsys, argv, message):
    out = tmp_path / "rows.json"
    assert main(["sweep", "--json", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_a_method_spec_trains_with_its_parameters_and_names_its_rows(digits):
    """``pq[init=narrow,repair_empty=false]`` is a second curve beside ``pq``: its parameters reach
    the model (the collapsed start's distortion), and its row equals that model measured directly."""
    seen = []
    rows = sweep(digits, "pq,pq[init=narrow,repair_empty=false]", [32], references=(), overrides={"n_iter": 4},
                 callbacks=[seen.append])
    assert [r["method"] for r in rows] == ["pq", "pq[init=narrow,repair_empty=false]"]
    spec_model = seen[1].quantizer
    assert (spec_model.init, spec_model.repair_empty, spec_model.n_iter) == ("narrow", False, 4)
    assert rows[1]["distortion"] > 2 * rows[0]["distortion"] and rows[1]["dead_codes"] > 100
    direct = create("pq", n_subspaces=4, n_codewords=256, n_iter=4, init="narrow", repair_empty=False,
                    random_state=0).fit(digits.base)
    assert rows[1]["distortion"] == pytest.approx(quantizer_row(direct, digits)["distortion"], rel=1e-12)


def test_spec_parameters_win_over_the_sweeps_overrides(digits):
    rows = sweep(digits, ["pq[n_iter=1]"], [16], references=(), overrides={"n_iter": 6})
    one = sweep(digits, ["pq"], [16], references=(), overrides={"n_iter": 1})
    assert rows[0]["distortion"] == one[0]["distortion"] and rows[0]["method"] == "pq[n_iter=1]"


@pytest.mark.parametrize("text, message", [
    ("sscq[preset=spx]", "preset='spx' is not known; use one of sscq, spq"),
    ("sscq[n_neighbours=ten]", "n_neighbours='ten' is not an integer"),
    ("dpq[gini=maybe]", "write gini=true or gini=false"),
    ("sscq[nope=1]", "sscq has no parameter 'nope'; valid:"),
    ("pq[n_subspaces=4]", "n_subspaces is set by the sweep (--bits)"),
    ("pq[random_state=4]", "random_state is set by the sweep (--seed)"),
    ("pq[n_iter]", "'n_iter' is not param=value"),
    ("pq,pq[]", "pq given twice"),
    ("pq[n_iter=2", "is not a method spec"),
])
def test_bad_method_specs_name_the_parameter_and_the_fix(text, message):
    with pytest.raises(InvalidParameter) as err:
        parse_methods(text)
    assert message in str(err.value)


def test_parse_methods_types_values_by_the_parameters_defaults():
    spq, nk, dpq = parse_methods("sscq[preset=spq],sscq[n_neighbours=0,lambda_cd=0.5],dpq[gini=off]")
    assert (spq.name, spq.params, spq.label) == ("sscq", {"preset": "spq"}, "sscq[preset=spq]")
    assert nk.params == {"n_neighbours": 0, "lambda_cd": 0.5} and type(nk.params["lambda_cd"]) is float
    assert dpq.params == {"gini": False} and dpq.label == "dpq[gini=false]"


def test_cli_sweeps_method_specs_and_refuses_a_bad_one_before_training(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["sweep", "--methods", "pq,pq[n_iter=1]", "--bits", "16", "--references", "none", "--iters", "3",
                 "--quiet", "--json", str(out)]) == 0
    assert [r["method"] for r in json.loads(out.read_text())] == ["pq", "pq[n_iter=1]"]
    bad = tmp_path / "bad.json"
    assert main(["sweep", "--methods", "pq,sscq[preset=simclr]", "--json", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "preset='simclr' is not known" in err and err.count("\n") == 1 and not bad.exists()
