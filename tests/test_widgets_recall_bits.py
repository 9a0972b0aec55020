import pytest

from widgets import RecallBitsView


def row(method, bits, r10, map_=None, reference=False):
    return {"method": method, "bits": bits, "subspaces": bits // 8, "codewords": 256,
            "recall_at": {"1": r10 / 2, "10": r10, "100": 1.0}, "map": map_, "reference": reference}


def test_one_curve_per_method_sorted_by_bits_references_dashed():
    view = RecallBitsView(measure="1-recall@10")
    view.add_row(row("pq", 64, 0.9))
    view.add_row(row("pq", 32, 0.7))
    view.add_rows([row("faiss-pq", 32, 0.72, reference=True), row("faiss-pq", 16, 0.5, reference=True)])
    pq, ref = view.figure.data
    assert (pq.name, list(pq.x), list(pq.y)) == ("pq", [32, 64], [0.7, 0.9])
    assert (ref.name, list(ref.x), list(ref.y)) == ("faiss-pq (reference)", [16, 32], [0.5, 0.72])
    assert ref.line.dash == "dash" and pq.line.dash == "solid"


def test_measure_switch_and_rows_without_map():
    view = RecallBitsView()
    view.add_rows([row("pq", 32, 0.7, map_=0.4), row("pq", 64, 0.9)])
    view.measure.value = "mAP"
    assert list(view.figure.data[0].x) == [32] and list(view.figure.data[0].y) == [0.4]
    view.measure.value = "1-recall@1"
    assert list(view.figure.data[0].y) == [0.35, 0.45]


def test_a_row_missing_keys_is_refused_with_their_names():
    with pytest.raises(ValueError, match="lacks bits, reference"):
        RecallBitsView().add_row({"method": "pq", "subspaces": 8, "codewords": 256, "recall_at": {}, "map": None})
