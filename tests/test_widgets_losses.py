from widget_streams import steps, stream
from widgets import LossView


def test_one_trace_per_loss_term_with_every_step():
    events = stream("opq", n_iter=3, n_iter_pq_first=3, n_iter_pq=1)
    view = LossView().replay(events)
    st = steps(events)
    assert [t.name for t in view.figure.data] == list(st[0].losses)  # total, pq_step
    for trace in view.figure.data:
        assert list(trace.x) == [s.step for s in st]
        assert list(trace.y) == [s.losses[trace.name] for s in st]
    assert view.figure.layout.yaxis.type == "log"
