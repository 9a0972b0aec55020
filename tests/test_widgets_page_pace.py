"""Live redraws wait for the page to draw the previous update, so a slow browser gets fewer
updates rather than a growing queue of them (widgets._view.View.page_behind)."""
import time

import widgets._view
from widget_streams import steps, stream
from widgets import UsageView, watch


def page_draws(view) -> None:
    """What plotly's page sends once it has drawn the figure's last update: its trace deltas,
    tagged with that update's edit id (applied in the kernel's main thread through set_state)."""
    view.figure.set_state({"_js2py_traceDeltas": {"trace_deltas": [], "trace_edit_id": view.figure._last_trace_edit_id}})


def bars(view) -> list:
    return list(view.figure.data[0].y)


def test_a_live_redraw_waits_until_the_page_has_drawn_the_last_update():
    events = steps(stream("pq", n_iter=4))
    view = UsageView(4, 16)
    view(events[0])
    page_draws(view)  # a page shows the figure and has drawn it

    view.observe(events[1])
    assert view.redraw(live=True) and bars(view) == events[1].usage[0].tolist()
    view.observe(events[2])  # the page has not drawn step 1 yet: step 2 waits
    assert view.page_behind()
    assert not view.redraw(live=True) and bars(view) == events[1].usage[0].tolist()
    page_draws(view)
    assert view.redraw(live=True) and bars(view) == events[2].usage[0].tolist()

    view.observe(events[3])  # a redraw that is not live (the end of a run) never waits
    assert view.redraw() and bars(view) == events[3].usage[0].tolist()


def test_without_a_page_or_after_the_wait_nothing_is_held_back(monkeypatch):
    events = steps(stream("pq", n_iter=3))
    alone = UsageView(4, 16)  # never displayed: no page answers, nothing to wait for
    for event in events:
        alone.observe(event)
        assert alone.redraw(live=True) and bars(alone) == event.usage[0].tolist()

    shown = UsageView(4, 16)
    shown(events[0])
    page_draws(shown)
    shown.observe(events[1])
    assert shown.redraw(live=True)
    monkeypatch.setattr(widgets._view, "PAGE_WAIT", 0.0)  # a page that stopped answering (closed)
    shown.observe(events[2])
    assert shown.redraw(live=True) and bars(shown) == events[2].usage[0].tolist()


def test_the_drawing_thread_draws_a_held_back_step_once_the_page_catches_up():
    events = stream("pq", n_iter=4)
    st = steps(events)
    view = UsageView(4, 16)
    callback = watch(view, interval=0.01, background=True)
    try:
        callback(events[0])  # FitStarted
        callback(st[0])
        deadline = time.monotonic() + 5
        while bars(view) != st[0].usage[0].tolist() and time.monotonic() < deadline:
            time.sleep(0.01)
        page_draws(view)
        callback(st[1])
        deadline = time.monotonic() + 5
        while bars(view) != st[1].usage[0].tolist() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bars(view) == st[1].usage[0].tolist()
        callback(st[2])  # the page has not drawn step 1: held back, pass after pass
        time.sleep(0.3)
        assert bars(view) == st[1].usage[0].tolist()
        page_draws(view)  # it has now: the drawing thread sends step 2 on its next pass
        deadline = time.monotonic() + 5
        while bars(view) != st[2].usage[0].tolist() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bars(view) == st[2].usage[0].tolist()
    finally:
        callback.close()
