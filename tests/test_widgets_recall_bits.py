import pytest

from explorer.sweep import sweep
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


def click(view, trace: int, point: int) -> None:
    """Send the message the browser sends when a point is clicked."""
    x, y = view.figure.data[trace].x[point], view.figure.data[trace].y[point]
    view.figure._js2py_pointsCallback = {"event_type": "plotly_click", "points": {
        "xs": [x], "ys": [y], "point_indexes": [point], "trace_indexes": [trace]}}


def test_open_run_and_a_click_show_that_runs_usage_and_collapse(digits):
    view = RecallBitsView()
    events = {}
    sweep(digits, ["pq"], [16, 32], references=("pq",), overrides={"n_iter": 4}, record_steps=3,
          callbacks=[view, lambda e: events.setdefault((e.row["method"], e.row["bits"]), e.events)])
    assert events[("faiss-pq", 16)] is None and set(view.runs) == {("pq", 16), ("pq", 32)}
    usage, collapse = view.open_run("pq", 32)
    recorded = events[("pq", 32)]
    assert view.opened == ("pq", 32) and usage.usage.shape == (4, 256) and len(usage.figure.data) == 8
    assert (usage.usage == recorded.last.usage).all() and collapse.steps == [2, 3, 4]  # the last 3 recorded steps
    shown = view.run_box.children
    assert usage.figure in shown[1].children and collapse.figure in shown[2].children
    # the browser's click message on the 16-bit point of pq's curve (trace 0) opens that run in the same views
    click(view, trace=0, point=0)
    assert view.opened == ("pq", 16) and (view.usage, view.collapse) == (usage, collapse)
    assert usage.usage.shape == (2, 256) and (usage.usage == events[("pq", 16)].last.usage).all()
    click(view, trace=1, point=1)  # faiss-pq at 32 bits: a reference has no run to open
    assert view.opened == ("pq", 16)
    with pytest.raises(ValueError, match="method='opq' at bits=16"):
        view.open_run("opq", 16)
