"""The embedding view's projections, computed in a low-priority worker process of their own."""
import os

import numpy as np
import pytest

from explorer.projection import ProjectionProcess, project, shared_process
from widget_streams import stream
from widgets import EmbeddingView


@pytest.fixture
def worker():
    proc = ProjectionProcess()
    yield proc
    proc.close()


def _points(n=120, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_the_worker_draws_the_same_picture_as_the_caller_would_in_another_process(worker):
    pts = _points()
    xy = worker.project(pts)
    assert worker.pid is not None and worker.pid != os.getpid()
    assert xy.shape == (120, 2) and xy.dtype == np.float32
    np.testing.assert_allclose(xy, project(pts), rtol=0, atol=1e-3)
    np.testing.assert_allclose(worker.project(pts, random_state=1), project(pts, random_state=1), rtol=0, atol=1e-3)
    assert worker.requests == 2


def test_the_worker_runs_at_the_lowest_priority(worker):
    worker.project(_points(10))
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, worker.pid) == min(19, mine + 19)
    polite = ProjectionProcess(nice=0)
    try:
        polite.project(_points(10))
        assert os.getpriority(os.PRIO_PROCESS, polite.pid) == mine
    finally:
        polite.close()


def test_a_refused_request_raises_and_the_worker_goes_on(worker):
    with pytest.raises(ValueError, match="algorithm='PCA'"):
        worker.project(_points(), "PCA")
    with pytest.raises(RuntimeError, match="ValueError"):  # 1-D points: project() refuses them in the worker
        worker.project(np.zeros(5, dtype=np.float32))
    pid = worker.pid
    assert worker.project(_points(10)).shape == (10, 2) and worker.pid == pid


def test_a_killed_worker_is_started_again(worker):
    worker.project(_points(10))
    first = worker.pid
    os.kill(first, 9)
    os.waitpid(first, 0)
    assert worker.project(_points(10)).shape == (10, 2)
    assert worker.pid != first


def test_close_ends_the_worker(worker):
    worker.project(_points(10))
    pid = worker.pid
    worker.close()
    assert worker.pid is None
    with pytest.raises(ChildProcessError):  # reaped: no such child any more
        os.waitpid(pid, 0)


def test_a_background_view_projects_in_the_shared_worker_and_draws_what_a_foreground_one_does():
    events = stream("pq", sample_every=2, n_iter=5)
    served = shared_process().requests
    live = EmbeddingView(sample_every=2, background=True)
    live.replay(events)
    live.wait(60)
    assert shared_process().requests > served
    here = EmbeddingView(sample_every=2, background=False).replay(events)
    assert live.picture["step"] == here.picture["step"] == 4
    np.testing.assert_allclose(live.picture["points"], here.picture["points"], rtol=0, atol=1e-3)
    assert list(live.figure.data[0].marker.color) == list(here.figure.data[0].marker.color)


def test_a_caller_that_exits_mid_projection_leaves_no_traceback(tmp_path):
    """The worker's answer finds the pipe closed: it ends quietly (it printed BrokenPipeError
    tracebacks into the caller's terminal after every dashboard bench)."""
    import subprocess
    import sys
    script = tmp_path / "caller.py"
    script.write_text(
        "import threading, time, numpy as np\n"
        "from explorer.projection import ProjectionProcess\n"
        "p = ProjectionProcess(nice=0)  # the test's own worker, at normal priority: it ends quickly\n"
        "p.project(np.zeros((5, 2), np.float32), 't-SNE')  # warm: the worker is up and has imported t-SNE\n"
        "threading.Thread(target=p.project, args=(np.random.default_rng(0).random((600, 8)), 't-SNE'), daemon=True).start()\n"
        "time.sleep(0.5)\n"
        "import os; os._exit(0)  # gone without closing the worker, as a killed kernel\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # run() returns once the worker, which shares the caller's stderr, has ended too
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
