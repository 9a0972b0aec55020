"""A redraw from a training thread while the kernel applies the page's reply must still reach the page."""
import threading

from widget_streams import steps, stream
from widgets import UsageView


def _sent_payloads(figure) -> list:
    """Replace the widget's wire with a list of (trait, payload or None) of every state update."""
    sent = []

    def send(msg, buffers=None):
        for key, value in msg.get("state", {}).items():
            sent.append((key, value))

    figure._send = send
    return sent


def test_a_redraw_during_the_pages_delta_message_is_not_lost():
    events = steps(stream("pq", n_iter=4))
    view = UsageView(4, 16)
    view(events[0])
    sent = _sent_payloads(view.figure)

    # The kernel's main thread applies plotly's reply to the last redraw (ipywidgets' set_state,
    # which holds the widget's trait notifications); it is caught half-way through.
    inside, release = threading.Event(), threading.Event()
    set_trait = view.figure.set_trait

    def slow_set_trait(name, value):
        inside.set()
        release.wait(5)
        set_trait(name, value)

    view.figure.set_trait = slow_set_trait
    reply = {"_js2py_layoutDelta": {"layout_delta": {}, "layout_edit_id": -1}}
    main = threading.Thread(target=view.figure.set_state, args=(reply,))
    main.start()
    assert inside.wait(5)
    view.figure.set_trait = set_trait

    # ...while the training thread draws the next step
    drawer = threading.Thread(target=view, args=(events[-1],))
    drawer.start()
    drawer.join(0.3)
    release.set()
    main.join(5)
    drawer.join(5)

    updates = [value for key, value in sent if key == "_py2js_update"]
    assert any(value is not None for value in updates), f"the redraw reached the page only as {updates}"
    assert list(view.figure.data[0].y) == events[-1].usage[0].tolist()
