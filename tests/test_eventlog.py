"""Event logs: what one process writes, another reads back as the same typed events — live
while it grows, or later; strict JSON; torn and foreign files handled."""
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from explorer import methods
from explorer.errors import DataFileError
from explorer.events import EventLog, EventLogDir, FitFinished, FitStarted, Recorder, Step, read_events
from explorer.monitor import CodebookMonitor


def fit_logged(path, digits, **kw):
    rec = []
    q = methods.create("pq", n_subspaces=4, n_codewords=16, n_iter=4, **kw)
    q.fit(digits.base, callbacks=[rec.append, EventLog(path, sample_every=2)])
    return rec


def test_a_log_reads_back_as_the_events_the_run_emitted(tmp_path, digits):
    path = tmp_path / "run.jsonl"
    live = fit_logged(path, digits)
    back = list(read_events(path))
    assert [type(e) for e in back] == [type(e) for e in live]
    for a, b in zip(live, back):
        da, db = a.to_dict(), b.to_dict()
        if isinstance(a, FitFinished):  # seconds and metrics are floats through JSON: equal as written
            assert db == json.loads(json.dumps(da))
            continue
        assert db == da
    steps = [e for e in back if isinstance(e, Step)]
    assert isinstance(steps[0].usage, np.ndarray) and steps[0].usage.dtype == np.int64
    assert steps[0].sample is None and steps[1].sample is not None  # samples only at the log's sample_every
    assert steps[1].sample.codebooks.shape == (4, 16, 16)
    assert back[-1].metrics["distortion"] > 0  # a log asks for the final metrics: its reader cannot compute them


def test_every_line_is_strict_json_with_kind_first_and_wall_time(tmp_path, digits):
    path = tmp_path / "run.jsonl"
    mon = CodebookMonitor(4, callbacks=[EventLog(path)], every=1)
    mon.update(np.array([0, 1]), losses={"recon": 1.0})
    mon.close()
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["kind"] == "header" and header["format"] == "pqx-events" and header["version"] == 1
    for line in lines[1:]:
        record = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
        assert next(iter(record)) == "kind" and isinstance(record["wall_time"], float)


def test_nan_is_written_as_null_and_read_back_as_nan(tmp_path):
    path = tmp_path / "run.jsonl"
    log = EventLog(path)
    log(FitStarted(method="custom", params={}, n_subspaces=1, n_codewords=2))
    log(Step.from_usage(1, {"total": float("nan")}, np.array([[1, 1]])))
    assert '"total":null' in path.read_text()
    step = [e for e in read_events(path) if isinstance(e, Step)][0]
    assert np.isnan(step.losses["total"])


def test_a_torn_last_line_is_skipped(tmp_path, digits):
    path = tmp_path / "run.jsonl"
    fit_logged(path, digits)
    text = path.read_text()
    path.write_text(text + '{"kind":"step","step":99,"losses":{"to')  # writer killed mid-line
    events = list(read_events(path))
    assert len(events) == len(text.splitlines()) - 1 and isinstance(events[-1], FitFinished)


def test_a_file_that_is_not_an_event_log_is_named(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    with pytest.raises(DataFileError, match="notes.txt: not a PQ Explorer event log"):
        list(read_events(other))
    with pytest.raises(DataFileError, match="notes.txt: not a PQ Explorer event log"):
        EventLog(other)  # appending to it would corrupt it
    with pytest.raises(DataFileError, match="does not exist"):
        list(read_events(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="folder .* does not exist"):
        EventLog(tmp_path / "no" / "run.jsonl")


def test_a_corrupt_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path, digits):
    path = tmp_path / "run.jsonl"
    fit_logged(path, digits)
    lines = path.read_text().splitlines()
    lines[2] = "garbage"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match="run.jsonl, line 3: not a JSON event"):
        list(read_events(path))


def test_follow_tails_a_file_written_by_another_thread(tmp_path):
    path = tmp_path / "run.jsonl"
    got, done = [], threading.Event()

    def reader():
        for event in read_events(path, follow=True, timeout=20, poll_interval=0.02):
            got.append(event)
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    mon = CodebookMonitor(4, callbacks=[EventLog(path)])
    for i in range(3):
        mon.update(np.array([i, 0]))
        deadline = time.monotonic() + 10
        while len([e for e in got if isinstance(e, Step)]) < i + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len([e for e in got if isinstance(e, Step)]) == i + 1  # seen while the run goes on
    assert not done.is_set()
    mon.close()
    assert done.wait(10) and isinstance(got[-1], FitFinished)


def test_follow_gives_up_after_the_timeout_without_news(tmp_path):
    path = tmp_path / "run.jsonl"
    EventLog(path)(FitStarted(method="x", params={}, n_subspaces=1, n_codewords=2))
    t0 = time.monotonic()
    assert [e.kind for e in read_events(path, follow=True, timeout=0.3, poll_interval=0.05)] == ["fit_started"]
    assert time.monotonic() - t0 < 5


def test_follow_receives_steps_of_a_pqx_train_subprocess_while_it_runs(tmp_path):
    path = tmp_path / "run.jsonl"
    cmd = [sys.executable, "-m", "explorer.cli", "train", "--method", "pq", "--data", "synthetic", "-M", "8",
           "-K", "256", "--iters", "8", "--quiet", "--events", str(path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen_while_running = []
    try:
        for event in read_events(path, follow=True, timeout=120, poll_interval=0.02):
            if isinstance(event, Step):
                seen_while_running.append(proc.poll() is None)
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(seen_while_running) == 8 and any(seen_while_running)


def test_an_event_log_dir_writes_one_log_per_run(tmp_path, digits):
    logs = EventLogDir(tmp_path / "logs")
    for M in (2, 4, 4):
        methods.create("pq", n_subspaces=M, n_codewords=16, n_iter=2).fit(digits.base, callbacks=[logs])
    assert [p.name for p in logs.paths] == ["pq-M2-K16.jsonl", "pq-M4-K16.jsonl", "pq-M4-K16-2.jsonl"]
    assert all(isinstance(list(read_events(p))[-1], FitFinished) for p in logs.paths)
    assert all(list(read_events(p))[-1].metrics["distortion"] > 0 for p in logs.paths)


def test_a_log_replays_into_the_recorder_of_the_live_run(tmp_path, digits):
    path = tmp_path / "run.jsonl"
    live = Recorder()
    methods.create("opq", n_subspaces=4, n_codewords=16, n_iter=3).fit(digits.base, callbacks=[live, EventLog(path)])
    back = Recorder()
    for event in read_events(path):
        back(event)
    assert back.history() == live.history()
