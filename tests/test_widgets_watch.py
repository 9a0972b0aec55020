from explorer.events import FitFinished, Step
from widget_streams import steps, stream
from widgets import EmbeddingView, LossView, UsageView, watch


def test_watch_keeps_every_step_while_redraws_are_throttled():
    events = stream("pq", n_iter=6)
    losses, usage = LossView(), UsageView(4, 16)
    drawn = []
    losses_redraw = losses.redraw
    losses.redraw = lambda: (drawn.append(len(losses.steps)), losses_redraw())
    callback = watch(losses, usage, interval=1e9)  # only the first step is drawn before the end
    for event in events:
        callback(event)
    st = steps(events)
    assert list(losses.figure.data[0].y) == [s.losses["total"] for s in st]  # no step lost
    assert list(usage.figure.data[0].y) == list(st[-1].usage[0])  # the final state is drawn
    # redraws: the start, the first step, the flushed last step and the finish — not one per step
    assert drawn == [0, 1, 6, 6]
    assert isinstance(events[-1], FitFinished) and all(isinstance(s, Step) for s in st)


def test_watch_asks_for_the_embedding_samples_its_views_want():
    assert watch(LossView(), EmbeddingView(sample_every=3), EmbeddingView(sample_every=2)).sample_every == 2
    assert watch(LossView(), UsageView()).sample_every == 0


def test_close_ends_the_drawing_thread_without_a_last_pass():
    import time

    class Counted:
        sample_every = 0

        def __init__(self):
            self.passes = 0

        def observe(self, event):
            pass

        def redraw(self, live=False):
            self.passes += 1
            return True

    view = Counted()
    callback = watch(view, interval=0.01, background=True)
    callback(steps(stream("pq", n_iter=6))[0])
    deadline = time.monotonic() + 10
    while view.passes == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert view.passes == 1
    callback.close()
    assert not callback._drawer.is_alive()  # joined: nothing is drawn after close returns
    assert view.passes == 1  # waking the thread to end it did not draw
