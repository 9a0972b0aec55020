"""Bad input on the own-data paths (saved models, encode, search, inspect, .npz/.hdf5, query
labels), in tests/test_bad_input.py's catalogue style: each is an explorer error naming the file
or flag and the fix; in the CLI, exit code 2, one line on stderr, no traceback, no output file."""
from __future__ import annotations

import sys

import faiss
import numpy as np
import pytest
import torch

from explorer import data, methods
from explorer.errors import DataFileError, InvalidParameter, InvalidType
from test_bad_input import run_cli  # the catalogue's in-process pqx (argparse errors exit via SystemExit)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("own")
    X = data.make_synthetic(n=300, d=16, random_state=0).base
    np.save(d / "x.npy", X)
    np.save(d / "x8.npy", X[:, :8])
    pq = methods.create("pq", n_subspaces=4, n_codewords=16, n_iter=2).fit(X)
    pq.save(d / "pq.pqx")
    methods.create("opq", n_subspaces=4, n_codewords=16, n_iter=2).fit(X).save(d / "opq.pqx")
    payload = torch.load(d / "pq.pqx", weights_only=True)
    payload["header"]["format_version"] = 2
    payload["header"]["library_version"] = "9.0.0"
    torch.save(payload, d / "future.pqx")
    (d / "junk.pqx").write_bytes(b"not a model at all")
    codes = pq.encode(X)
    np.save(d / "codes.npy", codes)
    np.save(d / "codes3.npy", codes[:, :3])
    np.save(d / "codes_float.npy", codes.astype(np.float32))
    np.save(d / "codes_big.npy", codes.astype(np.int64) + 16)
    import h5py
    with h5py.File(d / "notrain.hdf5", "w") as f:
        f["test"] = X[:10]
    with h5py.File(d / "badgt.hdf5", "w") as f:
        f["train"], f["test"], f["neighbors"] = X, X[:10], np.full((10, 5), 999)
    np.savez(d / "two.npz", a=X, b=X)
    np.save(d / "y299.npy", np.zeros(299, np.int64))
    np.save(d / "yq.npy", np.zeros(10, np.int64))
    np.save(d / "q.npy", X[:20])
    faiss.write_index(faiss.IndexFlatL2(16), str(d / "flat.faissindex"))
    (d / "junk.faissindex").write_bytes(b"\0" * 64)
    return {p.stem + p.suffix.replace(".", "_"): str(p) for p in d.iterdir()}


CASES = {
    # (argv, fragment of the one stderr line); {out} is the output file that must not appear
    "encode: model of another format version": (
        ["encode", "--model", "{future_pqx}", "--data", "{x_npy}", "--out", "{out}.npy"],
        "future.pqx: model format version 2 (written by pq-explorer 9.0.0), this pq-explorer reads version 1"),
    "encode: not a model": (["encode", "--model", "{junk_pqx}", "--data", "{x_npy}", "--out", "{out}.npy"],
                            "junk.pqx: not a readable PQ Explorer model"),
    "encode: missing model": (["encode", "--model", "/no/model.pqx", "--data", "{x_npy}", "--out", "{out}.npy"],
                              "/no/model.pqx: no such model file"),
    "encode: data of another dimension": (["encode", "--model", "{pq_pqx}", "--data", "{x8_npy}", "--out", "{out}.npy"],
                                          "--data"),
    "encode: output not .npy": (["encode", "--model", "{pq_pqx}", "--data", "{x_npy}", "--out", "{out}.txt"],
                                "must end in .npy"),
    "encode: output folder missing": (["encode", "--model", "{pq_pqx}", "--data", "{x_npy}", "--out", "/no/dir/c.npy"],
                                      "folder /no/dir does not exist"),
    "search: codes of the wrong width": (
        ["search", "--model", "{pq_pqx}", "--codes", "{codes3_npy}", "--queries", "{q_npy}", "--out", "{out}.npy"],
        "codes have shape (300, 3) but the model has M=4 subspaces"),
    "search: float codes": (
        ["search", "--model", "{pq_pqx}", "--codes", "{codes_float_npy}", "--queries", "{q_npy}", "--out", "{out}.npy"],
        "must be integers"),
    "search: codes of another model": (
        ["search", "--model", "{pq_pqx}", "--codes", "{codes_big_npy}", "--queries", "{q_npy}", "--out", "{out}.npy"],
        "outside [0, 15]"),
    "search: queries of another dimension": (
        ["search", "--model", "{pq_pqx}", "--codes", "{codes_npy}", "--queries", "{x8_npy}", "--out", "{out}.npy"],
        "--queries"),
    "search: k of 0": (
        ["search", "--model", "{pq_pqx}", "--codes", "{codes_npy}", "--queries", "{q_npy}", "-k", "0", "--out", "{out}.npy"],
        "-k 0"),
    "train: hdf5 without train": (["train", "--data", "{notrain_hdf5}", "--quiet", "--json", "{out}.json"],
                                  "notrain.hdf5: has no 'train' dataset"),
    "train: hdf5 neighbours outside the base": (["train", "--data", "{badgt_hdf5}", "-M", "4", "-K", "16", "--quiet",
                                                 "--json", "{out}.json"], "neighbors hold ids outside [0, 299]"),
    "train: npz without a clear base": (["train", "--data", "{two_npz}", "--quiet", "--json", "{out}.json"],
                                        "which array is the base"),
    "train: npz base key missing": (["train", "--data", "{two_npz}", "--base-key", "emb", "--quiet", "--json", "{out}.json"],
                                    "has no array 'emb' (--base-key)"),
    "train: query labels without queries": (["train", "--data", "{x_npy}", "--query-labels", "{yq_npy}", "--quiet",
                                             "--json", "{out}.json"], "need queries; give --queries PATH too"),
    "train: query labels of the wrong length": (
        ["train", "--data", "{x_npy}", "--queries", "{q_npy}", "--query-labels", "{yq_npy}", "--quiet", "--json", "{out}.json"],
        "yq.npy: query labels has 10 labels but there are 20 vectors"),
    "train: save folder missing": (["train", "--save", "/no/dir/m.pqx", "--quiet", "--json", "{out}.json"],
                                   "--save /no/dir/m.pqx: folder /no/dir does not exist"),
    "train: metric unknown": (["train", "--metric", "dot", "-K", "16", "--iters", "1", "--quiet", "--json", "{out}.json"],
                              "metric='dot' is not known"),
    "train: metric for a deep method": (["train", "--method", "dpq", "--metric", "ip", "--quiet", "--json", "{out}.json"],
                                        "--metric does not apply to method 'dpq'"),
    "inspect: unsupported index type": (["inspect", "--index", "{flat_faissindex}", "--data", "{x_npy}", "--json", "{out}.json"],
                                        "flat.faissindex: index type IndexFlatL2 is not supported"),
    "inspect: not an index": (["inspect", "--index", "{junk_faissindex}", "--data", "{x_npy}", "--json", "{out}.json"],
                              "junk.faissindex: not a readable faiss index"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_own_data_bad_input_exits_2_with_one_line_and_no_output(files, tmp_path, capsys, case):
    argv, fragment = CASES[case]
    out = tmp_path / "result"
    argv = [a.format(out=out, **files) for a in argv]
    code = run_cli(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.endswith("\n") and "Traceback" not in err, err
    assert fragment in err, err
    assert list(tmp_path.iterdir()) == []  # no output file, no temporary left


def test_library_model_of_another_method(files):
    with pytest.raises(InvalidParameter, match="opq.pqx: holds a 'opq' model, not 'pq'"):
        methods.get("pq").load(files["opq_pqx"])


def test_hdf5_without_h5py_names_the_install(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(InvalidParameter, match="needs h5py.*pip install 'pq-explorer\\[hdf5\\]'"):
        data.load(files["badgt_hdf5"])


def test_as_dataset_refuses_what_it_cannot_read():
    with pytest.raises(InvalidType, match="data has type int"):
        data.as_dataset(3)
    with pytest.raises(InvalidType, match="data must be 2-D"):
        data.as_dataset(np.ones(5))
    with pytest.raises(DataFileError, match="no such file"):
        data.as_dataset("/no/such.fvecs")
