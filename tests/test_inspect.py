"""inspect_faiss / pqx inspect: the codebook health of faiss IndexPQ, IndexIVFPQ (PQ on residuals)
and OPQ-pretransformed indexes, counted from faiss's own codes, under the report's key names."""
import json

import faiss
import numpy as np
import pytest

from explorer import cli, data, diagnostics, events
from explorer.errors import InvalidParameter, InvalidType
from explorer.inspect import inspect_faiss, unpack_codes
from explorer.search import native_stderr_silenced

REPORT_KEYS = {"subspaces", "codewords", "bits", "distortion", "usage", "perplexity", "dead_codes", "collapsed"}


@pytest.fixture(scope="module")
def X():
    return data.load("digits").base


def _trained(key, X, d=64):
    """A trained faiss index, built by hand (index_factory's "PQ" adds the slow polysemous training)."""
    M, nbits = {"PQ8": (8, 8), "IVF16,PQ8": (8, 8), "OPQ8,PQ8": (8, 8), "PQ8x4": (8, 4), "PQ4": (4, 8)}[key]
    if key.startswith("IVF"):
        index = faiss.IndexIVFPQ(faiss.IndexFlatL2(d), d, 16, M, nbits)
        index.cp.niter = 10
    else:
        index = faiss.IndexPQ(d, M, nbits)
        index.pq.cp.niter = 10
    if key.startswith("OPQ"):
        opq = faiss.OPQMatrix(d, M)
        opq.niter = 5
        index = faiss.IndexPreTransform(opq, index)
    with native_stderr_silenced():
        index.train(X)
    return index


def _usage_from_sa_codes(codes, M, skip=0):
    """Reference usage from faiss's own sa_encode bytes (nbits = 8): one byte per subspace after ``skip`` bytes."""
    return diagnostics.usage_histogram(codes[:, skip:skip + M], 256)


def test_index_pq_usage_is_faiss_codes_usage(X):
    index = _trained("PQ8", X)
    out = inspect_faiss(index, X, batch_size=500)
    assert REPORT_KEYS <= set(out) and out["index_type"] == "IndexPQ" and out["bits"] == 64
    np.testing.assert_array_equal(out["usage"], _usage_from_sa_codes(index.sa_encode(X), 8))
    decoded = index.sa_decode(index.sa_encode(X))
    assert out["distortion"] == pytest.approx(((X.astype(np.float64) - decoded) ** 2).sum(1).mean(), rel=1e-5)
    assert out["collapsed"] == [v.collapsed for v in diagnostics.detect_collapse(np.array(out["usage"]))]


def test_ivfpq_counts_the_pq_codes_of_residuals(X):
    index = _trained("IVF16,PQ8", X)
    out = inspect_faiss(index, X)
    assert out["n_lists"] == 16 and out["index_type"] == "IndexIVFPQ"
    # IVF-PQ's sa codes: one byte of list number (nlist = 16), then the residual's PQ code
    np.testing.assert_array_equal(out["usage"], _usage_from_sa_codes(index.sa_encode(X), 8, skip=1))


def test_opq_pretransform_applies_the_rotation_first(X):
    index = _trained("OPQ8,PQ8", X)
    out = inspect_faiss(index, X)
    assert out["index_type"] == "IndexPreTransform(OPQMatrix) > IndexPQ"
    np.testing.assert_array_equal(out["usage"], _usage_from_sa_codes(index.sa_encode(X), 8))


def test_codes_of_fewer_bits_are_unpacked(X):
    index = _trained("PQ8x4", X)
    out = inspect_faiss(index, X)
    assert out["codewords"] == 16 and np.asarray(out["usage"]).sum(axis=1).tolist() == [len(X)] * 8
    centroids = faiss.vector_to_array(index.pq.centroids).reshape(8, 16, 8)
    nearest = ((X.reshape(-1, 8, 1, 8) - centroids[None]) ** 2).sum(-1).argmin(-1)  # (n, M)
    np.testing.assert_array_equal(unpack_codes(index.pq.compute_codes(X), 8, 4), nearest)


def test_a_collapsed_subspace_is_flagged_and_the_others_not(X):
    index = _trained("PQ4", X)
    centroids = faiss.vector_to_array(index.pq.centroids).reshape(4, 256, 16)
    centroids[2, 3:] = 1e6  # subspace 2 keeps three usable codewords
    faiss.copy_array_to_vector(centroids.ravel(), index.pq.centroids)
    out = inspect_faiss(index, X)
    assert out["collapsed"] == [False, False, True, False]
    assert out["dead_codes"][2] >= 253 and "dead" in out["verdicts"][2]["reason"]


def test_callbacks_receive_the_standard_events(X):
    rec = events.Recorder()
    kinds = []
    out = inspect_faiss(_trained("PQ8", X), X, callbacks=[rec, lambda e: kinds.append(e.kind)])
    assert kinds == ["fit_started", "step", "fit_finished"]
    np.testing.assert_array_equal(rec.last.usage, out["usage"])
    np.testing.assert_allclose(rec.last.perplexity, out["perplexity"])


def test_unsupported_or_foreign_indexes_are_refused(X):
    with pytest.raises(InvalidParameter, match="index type IndexFlatL2 is not supported.*IndexPQ, IndexIVFPQ"):
        inspect_faiss(faiss.IndexFlatL2(64), X)
    with pytest.raises(InvalidType, match="index has type str"):
        inspect_faiss("index.faiss", X)
    with pytest.raises(InvalidParameter, match="X has dimension 32 but the index takes d=64"):
        inspect_faiss(_trained("PQ8", X), X[:, :32])
    with pytest.raises(InvalidParameter, match="not trained"):
        inspect_faiss(faiss.IndexPQ(64, 8, 8), X)


def test_cli_inspect_writes_the_json(X, tmp_path, capsys):
    faiss.write_index(_trained("IVF16,PQ8", X), str(tmp_path / "prod.faissindex"))
    np.save(tmp_path / "x.npy", X)
    assert cli.main(["inspect", "--index", str(tmp_path / "prod.faissindex"), "--data", str(tmp_path / "x.npy"),
                     "--json", str(tmp_path / "h.json")]) == 0
    result = json.loads((tmp_path / "h.json").read_text())
    assert REPORT_KEYS <= set(result) and len(result["verdicts"]) == 8
    assert "IndexIVFPQ: M=8 K=256" in capsys.readouterr().out
