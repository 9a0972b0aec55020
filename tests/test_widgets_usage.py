import numpy as np

from widget_streams import steps, stream
from widgets import UsageView


def test_bars_equal_the_last_steps_usage_and_dead_codes_are_marked():
    events = stream("pq", n_iter=6)
    view = UsageView().replay(events)
    last = steps(events)[-1]
    M, K = last.usage.shape
    assert len(view.figure.data) == 2 * M  # relaid out from FitStarted's M (built for 8)
    for m in range(M):
        assert list(view.figure.data[2 * m].y) == last.usage[m].tolist()
        assert list(view.figure.data[2 * m + 1].x) == np.flatnonzero(last.usage[m] == 0).tolist()


def test_collapsed_start_shows_dead_codewords():
    events = stream("pq", n_iter=4, n_codewords=256, init="narrow", repair_empty=False)
    view = UsageView(4, 16).replay(events)
    last = steps(events)[-1]
    assert last.dead_codes.sum() > 0
    for m in range(4):
        dead = np.flatnonzero(last.usage[m] == 0).tolist()
        assert list(view.figure.data[2 * m + 1].x) == dead
        assert view.figure.layout.annotations[m].text == f"subspace {m} · {len(dead)} dead"


def test_sorted_toggle_orders_bars_by_usage_and_keeps_codeword_ids():
    events = stream("pq", n_iter=6)
    view = UsageView(4, 16).replay(events)
    view.sorted.value = True
    last = steps(events)[-1]
    for m in range(4):
        y = np.array(view.figure.data[2 * m].y)
        ids = np.array(view.figure.data[2 * m].customdata)
        assert (np.diff(y) <= 0).all()
        assert (last.usage[m][ids] == y).all()


def test_steps_update_the_same_figure_in_place():
    events = stream("pq", n_iter=6)
    view = UsageView(4, 16)
    figure = view.figure
    seen = []
    for event in events:
        view(event)
        if event.kind == "step":
            seen.append(list(view.figure.data[0].y))
    assert view.figure is figure
    assert seen == [s.usage[0].tolist() for s in steps(events)]


def test_replays_a_library_recorder_too():
    from explorer import methods
    from explorer.events import Recorder
    from widget_streams import digits

    rec = Recorder()
    methods.create("pq", n_subspaces=4, n_codewords=16, n_iter=3).fit(digits().base, callbacks=[rec])
    view = UsageView().replay(rec)
    assert list(view.figure.data[6].y) == rec.last.usage[3].tolist()


def test_dead_markers_follow_every_step_and_the_sorted_toggle():
    """Dead markers and subplot titles are resent only when they change: every step still shows its own."""
    events = stream("pq", n_iter=6, n_codewords=256, init="narrow", repair_empty=False)
    view = UsageView(4, 256)
    shown = []
    for event in events:
        view(event)
        if event.kind == "step":
            shown.append([list(view.figure.data[2 * m + 1].x) for m in range(4)])
            for m in range(4):
                dead = np.flatnonzero(event.usage[m] == 0).tolist()
                assert shown[-1][m] == dead
                assert view.figure.layout.annotations[m].text == f"subspace {m} · {len(dead)} dead"
    assert len({str(s) for s in shown}) > 1  # the dead sets did change across steps
    view.sorted.value = True
    heights = np.sort(steps(events)[-1].usage[0])[::-1]
    assert list(view.figure.data[1].x) == np.flatnonzero(heights == 0).tolist()


def test_bars_go_to_the_page_as_binary_arrays_not_lists():
    """plotly's serialiser turns int64 arrays (numpy's counts and argsort ids) into JSON lists;
    the bars, their codeword ids and the dead markers must go as binary buffers."""
    from plotly.serializers import _py_to_js

    view = UsageView(4, 16)
    view.sorted.value = True
    view.replay(stream("pq", n_iter=4, n_codewords=256, init="narrow", repair_empty=False))
    bars, dead = view.figure.data[0], view.figure.data[1]
    assert len(dead.x) > 0  # the narrow start leaves dead codewords to mark
    for values in (bars.y, bars.customdata, dead.x):
        assert "buffer" in _py_to_js(values, None), type(values)
