import numpy as np

from explorer.diagnostics import detect_collapse
from widget_streams import steps, stream
from widgets import CollapseView


def test_lines_hold_every_steps_perplexity_and_dead_codes():
    events = stream("pq", n_iter=6)
    view = CollapseView(4).replay(events)
    st = steps(events)
    for m in range(4):
        assert list(view.figure.data[m].x) == [s.step for s in st]
        np.testing.assert_allclose(view.figure.data[m].y, [s.perplexity[m] for s in st])
        assert list(view.figure.data[4 + m].y) == [int(s.dead_codes[m]) for s in st]
    assert view.alarm_text.startswith("No collapse at step 6")


def test_alarm_names_subspace_since_when_and_the_detectors_reason():
    events = stream("pq", n_iter=4, n_codewords=256, init="narrow", repair_empty=False)
    view = CollapseView(4).replay(events)
    last = steps(events)[-1]
    verdicts = detect_collapse(last.usage)
    bad = [v for v in verdicts if v.collapsed]
    assert bad, "a narrow start without repair must collapse"
    assert view.alarm_text.startswith(f"COLLAPSE at step {last.step}: {len(bad)} of 4 subspaces")
    for v in bad:
        first = next(s.step for s in steps(events) if detect_collapse(s.usage)[v.subspace].collapsed)
        assert f"subspace {v.subspace} since step {first}: {v.reason}" in view.alarm_text
    assert "COLLAPSE" in view.alarm.value


def test_a_new_run_clears_the_alarm_history():
    view = CollapseView(4).replay(stream("pq", n_iter=4, n_codewords=256, init="narrow", repair_empty=False))
    view.replay(stream("pq", n_iter=6))
    assert view.alarm_text.startswith("No collapse")
    assert len(view.figure.data[0].x) == 6


def test_the_history_goes_to_the_page_as_binary_arrays_not_lists():
    """plotly's serialiser turns int64 arrays and lists into JSON lists that ipywidgets walks
    element by element; the collapse view's growing history must go as int32/float64 buffers."""
    from plotly.serializers import _py_to_js

    from widgets._view import wire_array

    view = CollapseView(4)
    for event in stream("pq", n_iter=5):
        view(event)
    for trace in view.figure.data:
        for values in (trace.x, trace.y):
            assert "buffer" in _py_to_js(values, None), (trace.name, type(values))
    assert wire_array(np.arange(3, dtype=np.int64)).dtype == np.int32
    assert wire_array(np.array([2**40])).dtype == np.float64 and wire_array([2**40])[0] == 2**40
    assert wire_array(np.array([0.5])).dtype == np.float64
