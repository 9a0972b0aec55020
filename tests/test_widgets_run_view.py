"""RunView: the views of a run this kernel did not start — from a finished log, from a log that
is still growing, or from a monitor watching a user's own loop."""
import time

import numpy as np

from explorer import methods
from explorer.events import EventLog, Step
from explorer.monitor import CodebookMonitor
from widgets import Dashboard, RunView


def figure_data(view: RunView) -> dict:
    """The drawn numbers of the usage, collapse and loss views (what a user sees)."""
    out = {}
    for name in ("usage", "collapse", "losses"):
        out[name] = [(tuple(t.x) if t.x is not None else None, tuple(t.y) if t.y is not None else None)
                     for t in view.figures[name].data]
    return out


def test_a_log_replays_into_figures_equal_to_the_live_runs(tmp_path, digits):
    path = tmp_path / "run.jsonl"
    live = RunView(n_subspaces=4, n_codewords=16, background_embedding=False)
    q = methods.create("pq", n_subspaces=4, n_codewords=16, n_iter=5, init="narrow", repair_empty=False)
    q.fit(digits.base, callbacks=[live.callback, EventLog(path)])
    live.redraw()
    replayed = RunView(path, background_embedding=False)
    assert not replayed.following  # finished: replayed at once, nothing to follow
    assert figure_data(replayed) == figure_data(live)
    assert replayed.usage.step == 5 and "finished after 5 steps" in replayed.status_text


def test_a_growing_log_is_followed_and_the_bars_move(tmp_path):
    path = tmp_path / "run.jsonl"
    mon = CodebookMonitor(8, 2, callbacks=[EventLog(path)])
    mon.update(np.zeros((10, 2), dtype=np.int64))
    view = RunView(path, interval=0.0, poll=0.02, timeout=30)
    assert view.following and view.usage.step == 1
    first = list(view.figures["usage"].data[0].y)
    mon.update(np.full((10, 2), 3, dtype=np.int64))
    deadline = time.monotonic() + 10
    # The step is recorded as the log is read; the figure is redrawn after it by the views' drawing
    # thread (background_redraw), so wait for both: on a busy machine the second came later.
    while (view.usage.step < 2 or list(view.figures["usage"].data[0].y) == first) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert view.usage.step == 2
    assert list(view.figures["usage"].data[0].y) != first  # redrawn from the new step
    mon.close()
    view.wait(10)
    assert not view.following and view.finished is not None


def test_a_monitor_feeds_a_run_view_through_its_callback():
    view = RunView(n_subspaces=1, n_codewords=16, interval=0.0)
    mon = CodebookMonitor(16, callbacks=[view.callback], method="my-vq")
    mon.update(np.zeros(100, dtype=np.int64), losses={"recon": 0.3})  # everything on codeword 0
    mon.close()
    assert view.collapse.verdicts[0].collapsed and view.collapse.since == [1]
    assert list(view.figures["usage"].data[0].y)[:2] == [100, 0]
    assert "reports no soft codes" in view.soft_hard.message_text
    assert isinstance(view.last_step, Step) and view.last_step.losses["recon"] == 0.3


def test_the_dashboard_is_a_run_view_plus_controls():
    dash = Dashboard("pq", "digits", n_subspaces=4, n_codewords=16, n_iter=3, references=False,
                     background_embedding=False)
    assert isinstance(dash.run, RunView) and dash.usage is dash.run.usage and dash.views["collapse"] is dash.run.collapse
    dash.fit(blocking=True)
    assert dash.run.last_step.step == 3 and dash.usage.step == 3


def test_the_dashboard_takes_an_array_a_dataset_or_a_path(tmp_path, digits):
    from explorer import data as datasets
    path = tmp_path / "base.npy"
    np.save(path, digits.base[:600])
    for source, label in ((digits.base[:600], "array 600×64"), (datasets.Dataset("mine", digits.base[:600]), "mine"),
                          (str(path), str(path))):
        dash = Dashboard("pq", source, n_subspaces=4, n_codewords=16, n_iter=2, references=False, n_queries=50,
                         background_embedding=False)
        assert dash.data_w.value == label
        dash.fit(blocking=True)
        assert dash.model.dim_ == 64 and len(dash.dataset()[0].queries) == 50
    import pytest
    with pytest.raises(TypeError, match="data has type dict"):
        Dashboard("pq", {"x": 1})


def test_a_faiss_index_built_elsewhere_is_shown_in_the_views(digits):
    """inspect_faiss emits the standard events, so a RunView draws a production index's usage."""
    import faiss

    from explorer.inspect import inspect_faiss
    X = np.ascontiguousarray(digits.base, dtype=np.float32)
    index = faiss.IndexPQ(64, 4, 4)
    index.train(X)
    view = RunView(n_subspaces=4, n_codewords=16, background_redraw=False)
    report = inspect_faiss(index, X, callbacks=[view.callback])
    assert view.usage.step == 1 and view.finished is not None
    drawn = [list(view.figures["usage"].data[2 * m].y) for m in range(4)]
    assert drawn == np.asarray(report["usage"]).tolist()
