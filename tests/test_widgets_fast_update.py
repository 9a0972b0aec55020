"""Views send a redraw as one plotly update message and skip plotly's per-property validation
(``View._restyle``): in plotly 7 each validated array costs ~0.2 ms whatever its length."""
import numpy as np
import pytest

import _plotly_utils.basevalidators as validators
from widget_streams import steps, stream
from widgets import CollapseView, LossView, SoftHardView, UsageView


@pytest.fixture
def validated(monkeypatch):
    """Counts plotly's array validations (each one goes through this copy)."""
    calls = []
    copy = validators.copy_to_readonly_numpy_array

    def counted(*args, **kwargs):
        calls.append(1)
        return copy(*args, **kwargs)

    monkeypatch.setattr(validators, "copy_to_readonly_numpy_array", counted)
    return calls


@pytest.mark.parametrize("make", [lambda: UsageView(4, 16), lambda: CollapseView(4), LossView, SoftHardView],
                         ids=["usage", "collapse", "losses", "soft_hard"])
@pytest.mark.parametrize("method", ["pq", "sscq"])
def test_a_redraw_is_one_unvalidated_message_holding_the_steps_values(make, method, validated, monkeypatch):
    params = {"n_iter": 5} if method == "pq" else {"epochs": 2, "warmup_epochs": 1}
    events = stream(method, **params)
    view = make()
    last = steps(events)[-1]
    for event in events[:events.index(last)]:
        view.observe(event)
    view.redraw()  # the first redraw may lay the figure out (validated, once)
    view.observe(last)
    sent = []
    monkeypatch.setattr(view.figure, "_send_update_msg", lambda *a, **k: sent.append(1))
    validated.clear()
    view.redraw()
    assert validated == [] and len(sent) <= 1
    fig = view.figure
    if isinstance(view, UsageView):
        assert sent and list(fig.data[0].y) == last.usage[0].tolist()
        assert not fig.data[0].y.flags.writeable  # stored read-only, as validation stores it
    elif isinstance(view, CollapseView):
        assert sent and list(fig.data[0].x)[-1] == last.step
        assert all(fig.data[i].x is fig.data[0].x for i in range(8))  # one frozen step array, not 2M copies
        np.testing.assert_allclose(fig.data[3].y[-1], last.perplexity[3])
    elif isinstance(view, LossView):
        assert sent and [t.name for t in fig.data] == list(last.losses)
        assert [fig.data[i].y[-1] for i in range(len(fig.data))] == pytest.approx(list(last.losses.values()))
    elif last.soft_hard:
        assert sent and fig.data[1].y[-1] == pytest.approx(last.soft_hard["agreement"])


def test_a_loss_missing_at_some_steps_is_a_gap():
    from explorer.events import Step
    view = LossView()
    usage = np.ones((1, 2), dtype=np.int64)
    view.replay([Step.from_usage(1, {"total": 1.0}, usage), Step.from_usage(2, {"total": 0.5, "kl": 0.1}, usage)])
    kl = view.figure.data[1].y
    assert np.isnan(kl[0]) and kl[1] == pytest.approx(0.1)


def test_property_paths_are_checked_once_per_trace_and_a_bad_one_is_refused(monkeypatch):
    """``View._send_pending`` asks plotly's schema about each (trace, property path) pair once, not
    at every redraw (that check was most of plotly_update's cost), and refuses a path the trace lacks."""
    from plotly.basedatatypes import BaseFigure
    calls = []  # (trace uid, path) of each check of a trace's path (relayouts check the layout's)
    real = BaseFigure._is_key_path_compatible

    def counted(path, obj):
        if obj.plotly_name != "layout":
            calls.append((obj.uid, path))
        return real(path, obj)

    monkeypatch.setattr(BaseFigure, "_is_key_path_compatible", staticmethod(counted))
    events = stream("pq", n_iter=5)
    view = UsageView(4, 16)
    for event in events[:-1]:
        view.observe(event)
        view.redraw()
    assert len(steps(events)) >= 5 and len(calls) >= 4  # every bar trace's "y", at least
    assert len(set(calls)) == len(calls)  # each pair once, over all the redraws
    view._pending = ({0: {"not_a_property": np.zeros(3)}}, {})
    with pytest.raises(ValueError, match="trace 0 \\(bar\\) has no property 'not_a_property'"):
        view._send_pending()


def test_only_the_traces_that_changed_are_sent():
    view = UsageView(2, 4)
    view._pending = ({0: {"y": np.array([1, 2, 3, 4])}, 2: {"y": np.array([0, 1, 0, 1])}}, {})
    view._send_pending()
    sent = []
    view.figure._send_update_msg = lambda **k: sent.append(k)
    view._pending = ({0: {"y": np.array([1, 2, 3, 4])}, 2: {"y": np.array([5, 1, 0, 1])}}, {})
    view._send_pending()
    assert len(sent) == 1 and sent[0]["trace_indexes"] == [2] and list(sent[0]["restyle_data"]["y"][0]) == [5, 1, 0, 1]
    assert list(view.figure.data[2].y) == [5, 1, 0, 1] and list(view.figure.data[0].y) == [1, 2, 3, 4]
    view._send_pending()  # nothing changed: nothing sent
    assert len(sent) == 1
