import numpy as np

from explorer.events import FitFinished, FitStarted, Step
from widget_streams import stream
from widgets import SoftHardView


def test_methods_without_soft_codes_get_a_message_not_empty_axes():
    view = SoftHardView().replay(stream("pq", n_iter=3))
    assert "'pq' has no soft codes" in view.message_text
    assert "no soft codes" in view.message.value
    assert view._box.layout.display == "none"
    assert view.figure.data[0].x in ((), None)


def test_soft_hard_payloads_are_plotted_per_step():
    usage = np.ones((2, 4), dtype=np.int64)
    values = [(0.5, 0.6), (0.25, 0.8), (0.1, 0.95)]
    events = [FitStarted(method="pq", params={}, n_samples=8, dim=4, n_subspaces=2, n_codewords=4)]
    events += [Step(step=i + 1, losses={"total": 1.0}, usage=usage, perplexity=np.full(2, 4.0),
                    dead_codes=np.zeros(2, int), soft_hard={"gap": g, "agreement": a}) for i, (g, a) in enumerate(values)]
    events.append(FitFinished(steps=3, stopped=False, seconds=0.1, metrics={}))
    view = SoftHardView().replay(events)
    assert view.message_text == ""
    assert view._box.layout.display is None
    assert list(view.figure.data[0].x) == [1, 2, 3]
    assert list(view.figure.data[0].y) == [g for g, _ in values]
    assert list(view.figure.data[1].y) == [a for _, a in values]
