"""ADC search: every scan path (faiss's table scan on the CPU for K ≤ 256, torch elsewhere) gives
the same distances — Σ_m T[q, m, c_m] summed in subspace order in float32 — and the same ids,
ranked by (distance, id), whatever the blocks of queries and codes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer import search


def reference(tables: np.ndarray, codes: np.ndarray, k: int):
    """(distances, ids) by the definition: float32 sums in subspace order, then order by (distance, id)."""
    d = np.zeros((len(tables), len(codes)), dtype=np.float32)
    for m in range(tables.shape[1]):
        d += tables[:, m, codes[:, m]]
    ids = np.stack([np.lexsort((np.arange(len(codes)), row))[:k] for row in d])
    return np.take_along_axis(d, ids, 1), ids


def tie_heavy(rng, nq, M, K, n):
    """Tables of small integers (sums exact, ties everywhere) and codes with duplicates."""
    tables = rng.integers(0, 4, size=(nq, M, K)).astype(np.float32)
    codes = rng.integers(0, K, size=(n, M)).astype(np.uint8 if K <= 256 else np.uint16)
    return tables, codes


@pytest.mark.parametrize("k", [1, 10, 299, 300, 1000])
@pytest.mark.parametrize("K", [4, 256])
def test_faiss_scan_equals_definition_with_ties_in_any_blocks(monkeypatch, k, K):
    rng = np.random.default_rng(K + k)
    tables, codes = tie_heavy(rng, 20, 3, K, 300)
    d_ref, i_ref = reference(tables, codes, k)
    for scan_codes, queries in ((1 << 22, 256), (37, 7), (1, 256)):
        monkeypatch.setattr(search, "_SCAN_CODES", scan_codes)
        monkeypatch.setattr(search, "_SDC_QUERIES", queries)
        d, i = search.adc_search(tables, codes, k)
        np.testing.assert_array_equal(i, i_ref)
        np.testing.assert_array_equal(d, d_ref)


def test_every_path_gives_the_same_bits_on_float_tables(monkeypatch):
    """Float tables (sums rounded): faiss's scan, the torch scan in blocks and the definition agree exactly."""
    rng = np.random.default_rng(0)
    tables = (rng.random((40, 8, 256), dtype=np.float32) * 100).astype(np.float32)
    codes = rng.integers(0, 256, size=(5000, 8)).astype(np.uint8)
    d_ref, i_ref = reference(tables, codes, 50)
    d, i = search.adc_search(tables, codes, 50)
    monkeypatch.setattr(search, "_BLOCK", 40 * 8 * 333)  # 333 codes per torch block
    d_t, i_t = search._adc_search_torch(tables, codes, 50, torch.device("cpu"))
    for dd, ii in ((d, i), (d_t, i_t)):
        np.testing.assert_array_equal(dd, d_ref)
        np.testing.assert_array_equal(ii, i_ref)


def test_wide_codebooks_scan_in_torch_like_the_definition():
    rng = np.random.default_rng(1)
    tables, codes = tie_heavy(rng, 5, 2, 300, 400)
    d, i = search.adc_search(tables, codes, 25)
    d_ref, i_ref = reference(tables, codes, 25)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_array_equal(d, d_ref)


def test_merge_topk_keeps_the_first_arrived_of_a_tie_cut_at_k():
    """A tie straddling the k-th place keeps its first-arrived items, in one block or several."""
    d = torch.tensor([[3.0, 1.0, 2.0, 2.0, 2.0, 0.0, 2.0]])
    ids = torch.arange(7)
    vals, best = search.merge_topk(None, None, d, ids, 3)
    assert best.tolist() == [[5, 1, 2]] and vals.tolist() == [[0.0, 1.0, 2.0]]
    v, b = search.merge_topk(None, None, d[:, :3], ids[:3], 3)
    v, b = search.merge_topk(v, b, d[:, 3:], ids[3:], 3)
    assert b.tolist() == [[5, 1, 2]]


def test_an_empty_base_is_named():
    with pytest.raises(ValueError, match="codes has no rows"):
        search.adc_search(np.zeros((2, 3, 4), np.float32), np.zeros((0, 3), np.uint8), 5)
