"""quantizer.save(path) / explorer.load(path) for every method: the loaded model encodes and
searches exactly as the saved one on vectors it never saw; the file is plain data that loading
never unpickles, with its parameters, library version and data digest."""
import pickle

import numpy as np
import pytest
import torch

import explorer
from explorer import data, methods
from explorer.errors import DataFileError, InvalidParameter
from explorer.methods.base import data_digest

SETTINGS = {
    "pq": dict(n_subspaces=8, n_codewords=16, n_iter=3, metric="ip"),
    "opq": dict(n_subspaces=8, n_codewords=16, n_iter=2, metric="cosine"),
    "dpq": dict(n_subspaces=4, n_codewords=16, embedding_dim=32, epochs=2, batch_size=64, backbone="mlp"),
    "fppq": dict(n_subspaces=4, n_codewords=16, embedding_dim=32, epochs=2, pretrain_epochs=1, batch_size=64,
                 backbone="mlp"),
    "sscq": dict(n_subspaces=2, n_codewords=16, epochs=2, batch_size=32, warmup_epochs=1, n_neighbours=5,
                 backbone="mlp"),
    "rlq": dict(n_subspaces=3, n_codewords=16, n_iter=2, batch_size=200, init_iter=2, references=False),
}


@pytest.fixture(scope="module")
def digits():
    ds = data.load_digits()
    return ds.base[:400], ds.labels[:400], ds.base[400:600]  # train, its labels, held-out vectors


@pytest.fixture(scope="module")
def fitted(digits):
    X, y, _ = digits
    out = {}
    for name, params in SETTINGS.items():
        q = methods.create(name, random_state=1, **params)
        out[name] = q.fit(X, y if q.supervised else None)
    return out


def test_settings_cover_every_method():
    assert sorted(SETTINGS) == sorted(methods.available())


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_loaded_model_encodes_and_searches_as_the_saved_one(fitted, digits, name, tmp_path):
    X, _, held = digits
    q = fitted[name]
    path = q.save(tmp_path / "model.pqx")
    loaded = explorer.load(path)
    assert type(loaded) is type(q) and loaded.get_params() == q.get_params()
    codes = q.encode(X)
    np.testing.assert_array_equal(loaded.encode(held), q.encode(held))
    d0, i0 = q.search(held[:50], codes, 10)
    d1, i1 = loaded.search(held[:50], codes, 10)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_allclose(d1, d0, rtol=1e-6, atol=1e-6)
    assert type(q).load(path).name == name  # through the method's class too


def test_header_carries_params_version_and_data_digest(fitted, digits, tmp_path):
    X = digits[0]
    path = fitted["opq"].save(tmp_path / "opq.pqx")
    header = torch.load(path, weights_only=True)["header"]
    assert header["library_version"] == explorer.__version__ and header["method"] == "opq"
    assert header["params"]["metric"] == "cosine" and header["params"]["n_subspaces"] == 8
    assert header["data"] == data_digest(X) and header["dim"] == 64


class _Payload:
    """Unpickling this object would run code (create the marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_loading_never_unpickles(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pqx"
    torch.save({"header": {"format": "pq-explorer-model"}, "state": _Payload(marker)}, evil)
    with pytest.raises(DataFileError, match="evil.pqx: not a readable PQ Explorer model"):
        explorer.load(evil)
    assert not marker.exists()
    (tmp_path / "pickled.pqx").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(DataFileError, match="pickled.pqx"):
        explorer.load(tmp_path / "pickled.pqx")
    assert not marker.exists()


def test_a_model_of_another_method_or_format_version_is_refused(fitted, tmp_path):
    path = fitted["pq"].save(tmp_path / "pq.pqx")
    with pytest.raises(InvalidParameter, match="pq.pqx: holds a 'pq' model, not 'opq'"):
        methods.get("opq").load(path)
    payload = torch.load(path, weights_only=True)
    payload["header"]["format_version"] = 99
    torch.save(payload, tmp_path / "future.pqx")
    with pytest.raises(DataFileError, match="future.pqx: model format version 99.*reads version 1"):
        explorer.load(tmp_path / "future.pqx")


def test_an_unfitted_model_cannot_be_saved_and_leaves_no_file(tmp_path):
    with pytest.raises(InvalidParameter, match="not fitted"):
        methods.create("pq").save(tmp_path / "m.pqx")
    assert list(tmp_path.iterdir()) == []
