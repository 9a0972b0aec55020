"""The bad-input catalogue: every user mistake raises an :mod:`explorer.errors` type (a
ValueError or TypeError) whose message names the parameter and the fix; the CLI turns each into
exit code 2, exactly one line on stderr, no traceback, and no output file."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from explorer import cli, data, methods
from explorer.errors import DataFileError, InvalidParameter, InvalidType, PQXError


@pytest.fixture(scope="module")
def X():
    return data.make_synthetic(n=400, d=16, random_state=0).base


@pytest.fixture(scope="module")
def fitted(X):
    return methods.create("pq", n_subspaces=4, n_codewords=16, n_iter=2).fit(X)


def raises(exc_type, *fragments):
    """pytest.raises for an explorer error whose message contains every fragment (case-insensitive)."""
    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(exc_type)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.ctx.__exit__(*exc)
            assert isinstance(self.info.value, PQXError), type(self.info.value)
            msg = str(self.info.value).lower()
            for frag in fragments:
                assert frag.lower() in msg, f"{frag!r} not in {msg!r}"
            return handled
    return _Check()


# --------------------------------------------------------------------------- library: data and parameters
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_data(X, bad):
    Xb = X.copy()
    Xb[7, 3] = bad
    with raises(InvalidParameter, "X contains NaN or inf", "row 7, column 3", "remove or impute"):
        methods.create("pq", n_subspaces=4, n_codewords=16).fit(Xb)
    assert issubclass(InvalidParameter, ValueError)


@pytest.mark.parametrize("bad,fragments", [
    (np.array([["a", "b"], ["c", "d"]]), ("dtype <U1", "numeric")),
    (np.ones((4, 2), dtype=complex), ("complex", "real-valued")),
    ([[1.0, 2.0], [3.0]], ("could not be read as an array", "(n, d)")),
    (np.ones(16, dtype=np.float32), ("must be 2-D", "reshape(1, -1)")),
    (np.ones((4, 4, 4), dtype=np.float32), ("must be 2-D", "3-D")),
])
def test_wrong_dtype_or_shape(bad, fragments):
    with raises(InvalidType, "X", *fragments):
        methods.create("pq", n_subspaces=2, n_codewords=2).fit(bad)
    assert issubclass(InvalidType, TypeError)


def test_empty_data():
    with raises(InvalidParameter, "X is empty", "shape (0, 16)", "at least 1"):
        methods.create("pq", n_subspaces=4, n_codewords=16).fit(np.zeros((0, 16), np.float32))


def test_d_not_divisible_by_M(X):
    with raises(InvalidParameter, "n_subspaces (M)=5", "d=16", "[1, 2, 4, 8, 16]"):
        methods.create("pq", n_subspaces=5, n_codewords=16).fit(X)


def test_K_larger_than_n(X):
    with raises(InvalidParameter, "n_codewords (K)=512", "n=400", "K ≤ 400"):
        methods.create("pq", n_subspaces=4, n_codewords=512).fit(X)


def test_K_beyond_uint16(X):
    with raises(InvalidParameter, "n_codewords (K)=70000", "≤ 65536", "uint16"):
        methods.create("pq", n_subspaces=4, n_codewords=70000).fit(X)


@pytest.mark.parametrize("param,value,exc,fragment", [
    ("n_subspaces", 2.5, InvalidType, "n_subspaces (M) must be an integer"),
    ("n_codewords", 1, InvalidParameter, "n_codewords (K)=1 is out of range"),
    ("n_iter", 0, InvalidParameter, "n_iter=0 is out of range"),
    ("init", "kmeans++", InvalidParameter, "init='kmeans++' is not known; use one of random, narrow"),
    ("device", "tpu", InvalidParameter, "device='tpu' is not a torch device"),
])
def test_bad_hyper_parameters(X, param, value, exc, fragment):
    with raises(exc, fragment):
        methods.create("pq", **{"n_subspaces": 4, "n_codewords": 16, param: value}).fit(X)


@pytest.mark.parametrize("method,param", [(name, param) for name in methods.available()
                                          for param in methods.get(name).param_choices])
def test_a_named_option_outside_its_choices_names_them(X, method, param):
    """Every parameter a method lists in ``param_choices`` is checked by ``fit`` before any work,
    with a message that names the parameter and every allowed value."""
    allowed = methods.get(method).param_choices[param]
    with raises(InvalidParameter, f"{param}='bogus' is not known", ", ".join(map(str, allowed))):
        methods.create(method, n_subspaces=4, n_codewords=16, **{param: "bogus"}).fit(X, np.zeros(len(X), dtype=np.int64))


def test_labels_of_wrong_length_or_kind(X):
    y = np.zeros(len(X), dtype=np.int64)
    with raises(InvalidParameter, "y has 399 labels but there are 400 vectors", "one label per vector"):
        methods.create("pq", n_subspaces=4, n_codewords=16).fit(X, y[:-1])
    with raises(InvalidType, "y must hold integer class labels"):
        methods.create("pq", n_subspaces=4, n_codewords=16).fit(X, y + 0.5)
    with raises(InvalidType, "y must be 1-D"):
        methods.create("pq", n_subspaces=4, n_codewords=16).fit(X, y[:, None])


def test_unknown_method_or_parameter():
    with raises(InvalidParameter, "unknown method 'nope'", "pq", "opq"):
        methods.create("nope")
    with raises(InvalidParameter, "method 'pq' has no parameter(s) epochs", "valid:", "n_iter"):
        methods.create("pq", epochs=3)
    with raises(InvalidParameter, "PQ has no parameter 'bogus'"):
        methods.create("pq").set_params(bogus=1)


def test_inference_misuse(X, fitted):
    with raises(InvalidParameter, "not fitted yet", "call fit(X) first"):
        methods.create("pq").encode(X)
    with raises(InvalidType, "dimension 8", "fitted on d=16"):
        fitted.encode(X[:, :8])
    with raises(InvalidType, "codes must have shape (n, M=4)"):
        fitted.decode(np.zeros((3, 5), dtype=np.uint8))
    with raises(InvalidParameter, "outside [0, 15]"):
        fitted.decode(np.full((3, 4), 16, dtype=np.int64))
    with raises(InvalidType, "codes must be integers"):
        fitted.decode(np.zeros((3, 4), dtype=np.float32))


def test_nan_in_a_late_batch_of_a_large_base_names_the_rows(fitted, X):
    big = np.tile(X, (3, 1))
    big[1000, 2] = np.nan
    with raises(InvalidParameter, "rows 800–1199", "row 200, column 2"):
        fitted.encode(big, batch_size=400)


# --------------------------------------------------------------------------- library: files
def _vecs(path, X):
    data.write_vecs(path, X)
    return path


BAD_FILES = {
    # name: (writer(tmp_path) -> path, fragments the message must hold)
    "truncated fvecs": (lambda p: _truncate(_vecs(p / "a.fvecs", np.ones((5, 4), np.float32)), 3), ("truncated",)),
    "truncated ivecs": (lambda p: _truncate(_vecs(p / "a.ivecs", np.ones((5, 4), np.int32)), 2), ("truncated",)),
    "truncated bvecs": (lambda p: _truncate(_vecs(p / "a.bvecs", np.ones((5, 4), np.uint8)), 1), ("truncated",)),
    "tiny fvecs": (lambda p: _write(p / "a.fvecs", b"\x01\x00"), ("too short", "truncated")),
    "fvecs negative dim": (lambda p: _write(p / "a.fvecs", np.array([-3, 0, 0, 0], "<i4").tobytes()),
                           ("declares dimension -3", "byte order")),
    "fvecs mixed dims": (lambda p: _write(p / "a.fvecs", np.array([2, 0, 0, 2, 0, 0, 3, 0, 0], "<i4").tobytes()),
                         ("inconsistent dimensions",)),
    "IDX bad magic": (lambda p: _write(p / "a-idx3-ubyte", b"\x12\x34\x08\x01" + b"\x00" * 8), ("bad idx magic",)),
    "IDX truncated": (lambda p: _truncate(_idx(p / "a-idx3-ubyte"), 5), ("truncated or corrupt",)),
    "IDX gz corrupt": (lambda p: _write(p / "a-idx3-ubyte.gz", gzip.compress(b"\x00" * 64)[:20]), ("cannot read",)),
    "IDX header cut": (lambda p: _write(p / "a-idx3-ubyte", b"\x00\x00\x08\x03\x00\x00"), ("header declares 3",)),
    "npy truncated": (lambda p: _truncate(_npy(p / "a.npy"), 7), ("not a readable .npy",)),
    "npy garbage": (lambda p: _write(p / "a.npy", b"this is not numpy"), ("not a readable .npy",)),
    "npy objects": (lambda p: _npy_objects(p / "a.npy"), ("not a readable .npy",)),
    "empty file": (lambda p: _write(p / "a.fvecs", b""), ("0 bytes",)),
    "missing file": (lambda p: p / "nope.fvecs", ("no such file",)),
    "unknown extension": (lambda p: _write(p / "a.csv", b"1,2\n"), ("unknown format", ".fvecs")),
}


def _write(path, payload: bytes):
    path.write_bytes(payload)
    return path


def _truncate(path, n_bytes):
    raw = path.read_bytes()
    path.write_bytes(raw[:-n_bytes])
    return path


def _idx(path):
    data.write_idx(path, np.arange(60, dtype=np.uint8).reshape(3, 4, 5))
    return path


def _npy(path):
    np.save(path, np.ones((6, 4), np.float32))
    return path


def _npy_objects(path):
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return path


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_unreadable_or_truncated_files(tmp_path, case):
    make, fragments = BAD_FILES[case]
    path = make(tmp_path)
    with raises(DataFileError, str(path.name), *fragments):
        data.load(str(path))


def test_data_file_holding_a_1d_array(tmp_path):
    np.save(tmp_path / "v.npy", np.ones(10, np.float32))
    with raises(DataFileError, "holds a 1-D array", "(n, d)"):
        data.load(str(tmp_path / "v.npy"))


def test_labels_and_queries_files_that_do_not_fit(tmp_path):
    np.save(tmp_path / "base.npy", np.ones((10, 4), np.float32))
    np.save(tmp_path / "labels.npy", np.zeros(9, np.int64))
    np.save(tmp_path / "queries.npy", np.ones((3, 5), np.float32))
    with raises(InvalidParameter, "labels has 9 labels but there are 10 vectors"):
        data.load(str(tmp_path / "base.npy"), labels=str(tmp_path / "labels.npy"))
    with raises(DataFileError, "queries have shape (3, 5)", "d=4"):
        data.load(str(tmp_path / "base.npy"), queries=str(tmp_path / "queries.npy"))
    with raises(InvalidParameter, "unknown dataset 'digitz'", "digits"):
        data.load("digitz")


# --------------------------------------------------------------------------- CLI
@pytest.fixture()
def files(tmp_path):
    X = data.make_synthetic(n=300, d=16, random_state=0).base
    paths = {"ok": tmp_path / "ok.npy", "nan": tmp_path / "nan.npy", "empty": tmp_path / "empty.npy",
             "trunc": tmp_path / "t.fvecs", "labels": tmp_path / "labels.npy", "nanq": tmp_path / "nanq.npy",
             "dir": tmp_path / "a-folder"}
    np.save(paths["ok"], X)
    Xn = X.copy()
    Xn[5, 5] = np.nan  # the 200 queries held out of 300 rows surely take some of rows 0-4
    np.save(paths["nan"], Xn)
    np.save(paths["nanq"], np.where(np.arange(16) == 1, np.inf, X[:4]))  # inf in every query row, column 1
    paths["dir"].mkdir()
    paths["bad_ck"] = tmp_path / "bad-ck"
    paths["bad_ck"].mkdir()
    (paths["bad_ck"] / "checkpoint.pt").write_bytes(b"PQXCKPT1 sha256=" + b"0" * 64 + b"\n" + b"flipped bytes")
    np.save(paths["empty"], np.zeros((0, 16), np.float32))
    _truncate(_vecs(paths["trunc"], X), 10)
    np.save(paths["labels"], np.zeros(299, np.int64))
    return {k: str(v) for k, v in paths.items()}


def run_cli(argv) -> int:
    """Exit code of ``pqx argv`` run in-process (argparse's own errors exit through SystemExit)."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


CLI_CASES = {
    "unknown method": (["--method", "nope"], "unknown method 'nope'"),
    "unknown option": (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    "option of another method": (["--method", "opq", "--init", "narrow"], "--init does not apply to method 'opq'"),
    "epochs for pq": (["--epochs", "3"], "--epochs does not apply to method 'pq'"),
    "non-integer M": (["-M", "two"], "argument -M/--subspaces: invalid int value"),
    "M does not divide d": (["-M", "7"], "n_subspaces (M)=7 does not divide the dimension d=64"),
    "K > n": (["-K", "4096"], "n_codewords (K)=4096 exceeds the number of training vectors"),
    "K > 65536": (["-K", "70000"], "K ≤ 65536"),
    "zero iterations": (["--iters", "0"], "n_iter=0 is out of range"),
    "too many queries": (["--n-queries", "5000"], "n_queries=5000 is out of range"),
    "NaN in data file": (["--data", "{nan}"], "--data {nan} contains NaN or inf (first at row 5, column 5)"),
    "inf in queries file": (["--data", "{ok}", "--queries", "{nanq}"],
                            "--queries {nanq} contains NaN or inf (first at row 0, column 1)"),
    "negative seed": (["--seed", "-1"], "--seed=-1 is out of range; it must be in [0, 2147483647]"),
    "seed beyond 32 bits": (["--seed", str(2**70)], f"--seed={2**70} is out of range"),
    "--json in a missing folder": (["--json", "{dir}/nope/r.json"],
                                   "--json {dir}/nope/r.json: folder {dir}/nope does not exist; create the folder"),
    "--json naming a folder": (["--json", "{dir}"], "--json {dir}: is a folder, not a file"),
    "--checkpoint naming a file": (["--checkpoint", "{ok}"], "--checkpoint {ok}: is a file, not a folder"),
    "--checkpoint below a file": (["--checkpoint", "{ok}/ck"], "--checkpoint {ok}/ck: cannot be created because"),
    "--checkpoint unwritable": (["--checkpoint", "/proc/pqx-ck"], "--checkpoint /proc/pqx-ck: cannot write in /proc"),
    "empty data file": (["--data", "{empty}"], "holds no vectors"),
    "truncated file": (["--data", "{trunc}"], "truncated"),
    "missing file": (["--data", "/no/such/file.fvecs"], "no such file"),
    "labels of wrong length": (["--data", "{ok}", "--labels", "{labels}", "--n-queries", "10"],
                               "labels has 299 labels but there are 300 vectors"),
    "bad checkpoint interval": (["--checkpoint", "{ck}", "--checkpoint-every", "0"], "checkpoint_every=0 is out of range"),
    "resume without checkpoint": (["--resume", "{ck}"], "no checkpoint.pt there"),
    "resume from a corrupt checkpoint": (["--resume", "{bad_ck}"],
                                         "{bad_ck}/checkpoint.pt: checkpoint is corrupt (its sha256 does not match"),
    "unknown device": (["--device", "tpu"], "device='tpu' is not a torch device"),
    "zero train size": (["--train-size", "0"], "--train-size=0 is out of range; it must be in [1, 1597]. Give at most"),
    "train size above the base": (["--data", "{ok}", "--queries", "{ok}", "--train-size", "301"],
                                  "--train-size=301 is out of range; it must be in [1, 300]. Give at most the 300 base "
                                  "vectors (queries excluded), or leave --train-size out"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_input_exits_2_with_one_line_and_no_output(tmp_path, files, capsys, case):
    argv, fragment = CLI_CASES[case]
    out = tmp_path / "report.json"
    argv = [a.format(ck=tmp_path / "ck", **files) for a in argv]
    fragment = fragment.format(**files)
    # the case's flags come last, so they override these small defaults
    code = run_cli(["train", "-K", "16", "--iters", "2", "--quiet", "--json", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err and fragment in err, err
    assert not out.exists() and not list(tmp_path.glob(".report.json*"))


EXPORT_CASES = {
    "export: K not a power of two": (["-K", "100"], "faiss needs K to be a power of two; K=100"),
    "export: --ivf above the training size": (["-K", "16", "--ivf", "5000", "--train-size", "500"],
                                              "--ivf NLIST=5000 is out of range"),
}


@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_cli_export_bad_input(tmp_path, capsys, case):
    argv, fragment = EXPORT_CASES[case]
    out = tmp_path / "x.faissindex"
    assert run_cli(["export", "--quiet", "--index", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert not out.exists()


@pytest.mark.parametrize("device,what", [("cuda", "CUDA GPU"), ("mps", "Apple (MPS) GPU")])
def test_cli_absent_accelerator_falls_back_to_cpu_with_one_line(tmp_path, capsys, monkeypatch, device, what):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    out = tmp_path / "r.json"
    assert run_cli(["train", "--device", device, "-K", "16", "--iters", "2", "--quiet", "--json", str(out)]) == 0
    err = capsys.readouterr().err
    assert err == f"pqx train: warning: --device {device} but torch sees no {what}; training on cpu instead\n"
    assert out.exists()
    with raises(InvalidParameter, f"device={device!r} but torch sees no", "use device='cpu' or 'auto'"):
        methods.create("pq", n_subspaces=2, n_codewords=4, device=device).fit(np.arange(80, dtype=np.float32).reshape(40, 2))  # library: no silent fallback


# --------------------------------------------------------------------------- output paths, before any work
# command: (argv with {dir} an existing folder and {file} an existing file, message fragment)
OUTPUT_CASES = {
    "sweep --json in a missing folder": (["sweep", "--json", "{dir}/nope/rows.json"], "--json {dir}/nope/rows.json: folder"),
    "sweep --csv naming a folder": (["sweep", "--csv", "{dir}"], "--csv {dir}: is a folder, not a file"),
    "sweep --csv in a missing folder": (["sweep", "--csv", "{dir}/nope/rows.csv"], "folder {dir}/nope does not exist"),
    "export --index in a missing folder": (["export", "--index", "{dir}/nope/x.faissindex"],
                                           "--index {dir}/nope/x.faissindex: folder {dir}/nope does not exist"),
    "export --index below a file": (["export", "--index", "{file}/x.faissindex"], "folder {file} is a file"),
    "export --ivf out of range": (["export", "-K", "16", "--ivf", "5000", "--train-size", "500", "--index", "{dir}/x"],
                                  "--ivf NLIST=5000 is out of range; it must be in [1, 500]"),
    "bench --json in a missing folder": (["bench", "--quick", "--json", "{dir}/nope/b.json"], "--json {dir}/nope/b.json: folder"),
    "train --json in a missing folder": (["train", "--json", "{dir}/nope/r.json"], "does not exist"),
    "train --checkpoint naming a file": (["train", "--checkpoint", "{file}"], "--checkpoint {file}: is a file"),
}


@pytest.mark.parametrize("case", sorted(OUTPUT_CASES))
def test_output_paths_are_checked_before_any_work(tmp_path, capsys, monkeypatch, case):
    """Each command refuses an output it could not write before it loads data or trains
    (before: a traceback and exit 1 after the whole training, the work lost)."""
    from explorer.commands import bench as bench_command
    from explorer.methods.base import Quantizer
    from explorer.methods.pq import PQ

    def no_work(*args, **kwargs):
        raise AssertionError("the command started its work before checking its outputs")
    loaded = []
    real_load = data.load
    monkeypatch.setattr(data, "load", lambda *a, **k: loaded.append(a) or real_load(*a, **k))
    for cls in (Quantizer, PQ):
        monkeypatch.setattr(cls, "fit", no_work)
    monkeypatch.setattr(bench_command, "run_benchmarks", no_work)
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("")
    argv, fragment = OUTPUT_CASES[case]
    fmt = dict(dir=tmp_path / "d", file=tmp_path / "f")
    code = run_cli([a.format(**fmt) for a in argv] + (["--quiet"] if argv[0] != "bench" else []))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and fragment.format(**fmt) in err, err
    if "--ivf" not in case:
        assert not loaded  # not even the data was read
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["d", "f"]


# --------------------------------------------------------------------------- seeds
SEED_CASES = {
    "random_state=-1": (-1, InvalidParameter, "random_state=-1 is out of range; it must be in [0, 2147483647]"),
    "random_state=2**70": (2**70, InvalidParameter, f"random_state={2**70} is out of range"),
    "random_state=1.5": (1.5, InvalidType, "random_state must be an integer seed in [0, 2147483647]; got 1.5 (float)"),
    "random_state='0'": ("0", InvalidType, "random_state must be an integer seed"),
    "random_state=np.random.default_rng(0)": (np.random.default_rng(0), InvalidType,
                                              "a numpy Generator or RandomState cannot seed torch and faiss too"),
}


@pytest.mark.parametrize("case", sorted(SEED_CASES))
def test_a_bad_random_state_is_refused_before_training(X, case):
    seed, exc, fragment = SEED_CASES[case]
    with raises(exc, fragment):
        methods.create("pq", n_subspaces=4, n_codewords=16, random_state=seed).fit(X)


@pytest.mark.parametrize("case", ["random_state=-1", "random_state=1.5"])
def test_a_bad_random_state_is_refused_by_the_data_split_and_sample_too(case):
    seed, exc, fragment = SEED_CASES[case]
    ds = data.make_synthetic(n=100, d=4, random_state=0)
    with raises(exc, fragment):
        data.split_queries(ds, 10, random_state=seed)
    with raises(exc, fragment):
        data.sample_rows(100, 10, seed)


def test_the_largest_seed_works(X):
    methods.create("pq", n_subspaces=4, n_codewords=16, n_iter=1, random_state=2**31 - 1).fit(X)


# --------------------------------------------------------------------------- degenerate data, hostile names
# rows of the catalogue that are not errors: case: (input, exit code, what happens)
BEHAVIOUR_CASES = {
    "fewer distinct vectors than K": ("pqx train --data FILE (10 distinct rows) -K 16", 0,
                                      "pqx train: warning: the N training vectors hold only D distinct ones, fewer than "
                                      "K=16 codewords: at most D codewords per subspace can be used and the rest stay "
                                      "dead; use -K D or less"),
    "dataset name that is a formula": ("pqx sweep --data =2+5.npy --csv rows.csv", 0, "'=2+5"),
}
def test_fewer_distinct_vectors_than_K_warns_on_stderr_and_in_the_report(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = np.repeat(rng.standard_normal((10, 16)).astype(np.float32), 40, axis=0)  # 400 rows, 10 distinct
    np.save(tmp_path / "dup.npy", X)
    out = tmp_path / "r.json"
    assert run_cli(["train", "--data", str(tmp_path / "dup.npy"), "-M", "4", "-K", "16", "--iters", "2",
                    "--n-queries", "20", "--quiet", "--json", str(out)]) == 0
    err = capsys.readouterr().err
    line = BEHAVIOUR_CASES["fewer distinct vectors than K"][2].replace("N", "380").replace("D", "10")
    assert err.startswith(line) and err.count("\n") == 1, err
    report = __import__("json").loads(out.read_text())
    assert len(report["warnings"]) == 1 and report["warnings"][0] in err
    # and none where the data are varied enough
    assert run_cli(["train", "-K", "16", "--iters", "2", "--quiet", "--json", str(out)]) == 0
    assert capsys.readouterr().err == "" and __import__("json").loads(out.read_text())["warnings"] == []


def test_count_distinct_rows_reads_a_memory_map_in_batches(tmp_path):
    from explorer.validation import count_distinct_rows
    X = np.tile(np.eye(7, dtype=np.float32), (5, 1))
    np.save(tmp_path / "x.npy", X)
    assert count_distinct_rows(np.load(tmp_path / "x.npy", mmap_mode="r"), batch_size=3) == 7
    assert count_distinct_rows(X[:0]) == 0


# --------------------------------------------------------------------------- reports are strict JSON
def test_reports_never_hold_bare_nan(tmp_path):
    import json

    from explorer.report import write_json_atomic
    payload = {"a": float("nan"), "b": np.float32("inf"), "c": np.array([1.0, np.nan]), "d": [(-np.inf, 2)],
               "e": np.int64(3), 4: "key made a string"}
    write_json_atomic(tmp_path / "r.json", payload)
    text = (tmp_path / "r.json").read_text()

    def refuse(constant):
        raise AssertionError(f"bare {constant} in the report")
    assert json.loads(text, parse_constant=refuse) == {"a": None, "b": None, "c": [1.0, None], "d": [[None, 2]], "e": 3,
                                                       "4": "key made a string"}


def test_every_json_output_goes_through_the_one_strict_writer():
    """No command writes JSON another way (json.dump/dumps), so none can write a bare NaN."""
    import inspect

    from explorer import commands, report
    from explorer.commands import bench, export, sweep, train
    for module in (bench, export, sweep, train, commands):
        assert "json.dump" not in inspect.getsource(module), module.__name__
    assert "allow_nan=False" in inspect.getsource(report.write_json_atomic)


# --------------------------------------------------------------------------- sweep CSV: no formula injection
def test_sweep_csv_escapes_cells_a_spreadsheet_would_run(tmp_path, capsys):
    import csv as csv_module

    from explorer.commands.sweep import csv_cell
    np.save(tmp_path / "=2+5.npy", data.make_synthetic(n=300, d=16, random_state=0).base)
    out = tmp_path / "rows.csv"
    assert run_cli(["sweep", "--data", str(tmp_path / "=2+5.npy"), "--methods", "pq", "--bits", "16",
                    "--references", "none", "--iters", "2", "--n-queries", "20", "--quiet", "--csv", str(out)]) == 0
    (row,) = list(csv_module.DictReader(out.open()))
    assert row["dataset"] == BEHAVIOUR_CASES["dataset name that is a formula"][2] and row["method"] == "pq" and float(row["distortion"]) > 0
    for text in ("=1+1", "+1", "-2", "@SUM(A1)", "\t=1", "\r=1"):
        assert csv_cell(text) == "'" + text
    assert csv_cell(-1.5) == -1.5 and csv_cell(None) == "" and csv_cell("digits") == "digits"


# --------------------------------------------------------------------------- the catalogue, as docs/reliability.md shows it
DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
START, END = "<!-- catalogue:start -->", "<!-- catalogue:end -->"


def catalogue() -> list[tuple[str, str, str, str, str]]:
    """(section, case, input, exit code, message) of every case the bad-input tests run, in the
    order docs/reliability.md lists them. Messages are the fragments the tests assert; {name}
    stands for a small file or folder the test writes (``{nan}`` a .npy with a NaN at row 5)."""
    from test_checkpoint import CHECKPOINT_CASES
    from test_dashboard_command import DASHBOARD_CASES
    from test_interrupt import SIGNAL_CASES
    rows = []
    for case in sorted(CLI_CASES):
        argv, fragment = CLI_CASES[case]
        rows.append(("pqx train", case, "pqx train " + " ".join(argv), "2", fragment))
    for case in sorted(EXPORT_CASES):
        argv, fragment = EXPORT_CASES[case]
        rows.append(("pqx export", case, "pqx export " + " ".join(argv), "2", fragment))
    for case in sorted(OUTPUT_CASES):
        argv, fragment = OUTPUT_CASES[case]
        rows.append(("output paths, before any work", case, "pqx " + " ".join(argv), "2", fragment))
    for case in sorted(BAD_FILES):
        rows.append(("data files (--data, --queries, --labels)", case, f"--data FILE ({case})", "2",
                     " … ".join(("FILE",) + BAD_FILES[case][1])))
    for case in sorted(SEED_CASES):
        _, exc, fragment = SEED_CASES[case]
        rows.append(("library seeds (fit raises; --seed in the CLI exits 2)", case, f"fit(X) with {case}",
                     exc.__name__, fragment))
    for case, (command, code, message) in CHECKPOINT_CASES.items():
        rows.append(("checkpoints", case, command, str(code), message))
    for case, (command, code, message) in SIGNAL_CASES.items():
        rows.append(("signals", case, command, str(code), message))
    for case, (command, code, message) in DASHBOARD_CASES.items():
        rows.append(("pqx dashboard", case, command, str(code), message))
    for case, (command, code, message) in BEHAVIOUR_CASES.items():
        rows.append(("not errors", case, command, str(code), message))
    return rows


def _cell(text: str) -> str:
    return "`" + str(text).replace("|", "\\|").replace("`", "'") + "`"


def catalogue_markdown() -> str:
    """The table docs/reliability.md holds between its catalogue markers."""
    lines = ["| section | case | input | exit code | message (stderr, one line) |", "|---|---|---|---|---|"]
    for section, case, command, code, message in catalogue():
        lines.append(f"| {section} | {case} | {_cell(command)} | {code} | {_cell(message)} |")
    return "\n".join(lines)


def test_the_docs_table_is_the_catalogue():
    """docs/reliability.md lists every case these tests run, with the exit code and message
    they assert, and nothing else: regenerate it with `python tests/test_bad_input.py`."""
    text = DOC.read_text()
    assert START in text and END in text, f"{DOC} lacks the catalogue markers"
    table = text.split(START)[1].split(END)[0].strip()
    expected = catalogue_markdown()
    missing = sorted(set(expected.splitlines()) - set(table.splitlines()))
    stale = sorted(set(table.splitlines()) - set(expected.splitlines()))
    assert not missing and not stale, f"missing rows: {missing}\nstale rows: {stale}\n(run python tests/test_bad_input.py)"
    assert table == expected


if __name__ == "__main__":  # rewrite the table in docs/reliability.md from the catalogue
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    text = DOC.read_text()
    head, rest = text.split(START)
    DOC.write_text(head + START + "\n" + catalogue_markdown() + "\n" + END + rest.split(END)[1])
