"""Stop signals (SIGINT, SIGTERM, SIGHUP) during ``pqx train``, ``sweep`` and ``export``: training
stops at the next step, the report of what was trained is written with ``"interrupted": true``,
the checkpoint holds the last step, and the exit code is 128 + the signal number; a signal after
the last step keeps the whole result; a second signal aborts with nothing half-written."""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from explorer import cli
from explorer.checkpoint import load_checkpoint
from explorer.commands import train as train_command
from explorer.events import Step
from explorer.methods.pq import PQ

ROOT = Path(__file__).resolve().parents[1]

# The signal rows of the bad-input catalogue (docs/reliability.md): case: (input, exit code, message
# on stderr). Each test below asserts its row.
SIGNAL_CASES = {
    "SIGINT during training": ("pqx train … (Ctrl-C)", 130,
                               "pqx train: interrupted by Ctrl-C (SIGINT) after step N; reporting the model trained so far"),
    "SIGTERM during training": ("pqx train … (kill -TERM)", 143,
                                "pqx train: interrupted by SIGTERM after step N; reporting the model trained so far"),
    "SIGHUP during training": ("pqx train … (terminal closed)", 129,
                               "pqx train: interrupted by SIGHUP after step N; reporting the model trained so far"),
    "signal after the last step": ("pqx train … (Ctrl-C during evaluation or report write)", "128+n",
                                   "after the last training step; finishing the evaluation and the report so the "
                                   "trained result is kept (a second signal aborts)"),
    "second signal": ("pqx train … (Ctrl-C twice)", "128+n",
                      "no report written (the checkpoint holds the last step saved)"),
    "signal during a sweep": ("pqx sweep … (kill -TERM)", 143,
                              "pqx sweep: interrupted by SIGTERM; writing the N row(s) finished so far"),
    "signal during an export's training": ("pqx export … (kill -HUP)", 129,
                                           "pqx export: interrupted by SIGHUP while training; no index written"),
    "signal while an export adds the base": ("pqx export … (kill -HUP)", 129,
                                             "pqx export: interrupted by SIGHUP while adding the base; no index written"),
}


def expected(case: str, n) -> tuple[int, str]:
    """(exit code, message) of ``case`` with N (step or row count) filled in."""
    _, code, message = SIGNAL_CASES[case]
    return code, message.replace(" N", f" {n}")


def read_until(proc, needle: bytes, limit_s: float = 120.0) -> bytes:
    """Bytes of proc.stderr up to and including the first ``needle`` (the progress bar has no newlines)."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    seen = b""
    while needle not in seen:
        if not sel.select(timeout=limit_s):
            proc.kill()
            raise AssertionError(f"no {needle!r} on stderr within {limit_s}s; got {seen[-500:]!r}")
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            raise AssertionError(f"process ended before printing {needle!r}: {seen[-2000:]!r}")
        seen += chunk
    return seen


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_a_stop_signal_ends_training_writes_an_interrupted_report_and_exits_128_plus_n(tmp_path, sig):
    report, ckpt = tmp_path / "r.json", tmp_path / "ck"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    iters = 1_000_000  # far more than can run before the signal
    proc = subprocess.Popen(
        [sys.executable, "-m", "explorer.cli", "train", "--method", "pq", "--data", "synthetic", "-K", "16",
         "--iters", str(iters), "--json", str(report), "--checkpoint", str(ckpt), "--checkpoint-every", "1000000"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        read_until(proc, b"] step ")  # training is under way: the progress bar has drawn a step
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err.decode()
    name = signal.Signals(sig).name
    data = json.loads(report.read_text())
    last = data["history"][-1]["step"]
    code, message = expected(f"{name} during training", last)
    assert proc.returncode == code == 128 + sig, err
    assert "Traceback" not in err and message in err, err
    assert b"Product quantization on synthetic" in out  # the summary of the partial model
    assert data["interrupted"] is True and data["signal"] == name
    assert 1 <= last < iters
    assert [h["step"] for h in data["history"]] == list(range(1, last + 1))[-len(data["history"]):]
    assert load_checkpoint(ckpt)["step"] == last  # the checkpoint was saved at the step training stopped
    assert all(sum(row) == data["n_base"] for row in data["usage"])  # a usable model encoded the whole base


def test_uninterrupted_report_says_interrupted_false(tmp_path, capsys):
    assert cli.main(["train", "--method", "pq", "-K", "16", "--iters", "2", "--quiet", "--json", str(tmp_path / "r.json")]) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["interrupted"] is False and data["signal"] is None


TRAIN = ["train", "--method", "pq", "-K", "16", "--iters", "3", "--quiet"]


def _signal_then(fn, sig, times=1):
    """``fn`` wrapped to receive ``sig`` (``times`` times) on entry, as a user pressing Ctrl-C then would."""
    def wrapped(*args, **kwargs):
        for _ in range(times):
            signal.raise_signal(sig)
        return fn(*args, **kwargs)
    return wrapped


@pytest.mark.parametrize("stage", ["build_report", "write_json_atomic"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_a_signal_after_the_last_step_keeps_the_whole_trained_result(tmp_path, monkeypatch, capsys, stage, sig):
    """Ctrl-C during the evaluation or the report write: the work finishes, the report of the
    whole model is written (not interrupted), and the exit code still says the signal came."""
    monkeypatch.setattr(train_command, stage, _signal_then(getattr(train_command, stage), sig))
    out = tmp_path / "r.json"
    assert cli.main(TRAIN + ["--json", str(out), "--checkpoint", str(tmp_path / "ck")]) == 128 + sig
    err = capsys.readouterr().err
    assert expected("signal after the last step", 0)[1] in err, err
    data = json.loads(out.read_text())
    # a signal during the write came after the report was made: it cannot name it, the exit code does
    assert data["interrupted"] is False and data["signal"] == (signal.Signals(sig).name if stage == "build_report" else None)
    assert data["history"][-1]["step"] == 3 and load_checkpoint(tmp_path / "ck")["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored on the way out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=lambda s: signal.Signals(s).name)
def test_a_second_signal_aborts_with_one_line_and_no_report(tmp_path, monkeypatch, capsys, sig):
    monkeypatch.setattr(train_command, "build_report", _signal_then(train_command.build_report, sig, times=2))
    out = tmp_path / "r.json"
    assert cli.main(TRAIN + ["--json", str(out), "--checkpoint", str(tmp_path / "ck")]) == 128 + sig
    err = capsys.readouterr().err
    assert f"aborted by a second {signal.Signals(sig).name if sig != signal.SIGINT else 'Ctrl-C (SIGINT)'}; " \
           + expected("second signal", 0)[1] in err
    assert "Traceback" not in err and not out.exists() and not list(tmp_path.glob(".r.json*"))
    assert load_checkpoint(tmp_path / "ck")["step"] == 3  # the trained model is kept in the checkpoint


@pytest.fixture()
def signal_at_step(monkeypatch):
    """Make every PQ fit receive ``sig`` once its step ``k`` is done (sweep and export train PQ)."""
    def arm(sig, k=2):
        fit = PQ.fit
        fired = []

        def fit_with_signal(self, X, y=None, *, callbacks=(), **kwargs):
            def at_step(event):
                if isinstance(event, Step) and event.step == k and not fired:
                    fired.append(k)
                    signal.raise_signal(sig)
            return fit(self, X, y, callbacks=[*callbacks, at_step], **kwargs)
        monkeypatch.setattr(PQ, "fit", fit_with_signal)
    return arm


def test_sighup_in_process_stops_train_like_the_others(tmp_path, signal_at_step, capsys):
    signal_at_step(signal.SIGHUP)
    out = tmp_path / "r.json"
    code, message = expected("SIGHUP during training", 2)
    assert cli.main(["train", "--method", "pq", "-K", "16", "--iters", "50", "--quiet", "--json", str(out)]) == code
    assert message in capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["interrupted"] is True and data["signal"] == "SIGHUP" and data["history"][-1]["step"] == 2


def test_a_signal_during_a_sweep_writes_the_rows_so_far(tmp_path, signal_at_step, capsys):
    signal_at_step(signal.SIGTERM)
    js, cs = tmp_path / "rows.json", tmp_path / "rows.csv"
    code = cli.main(["sweep", "--methods", "pq,opq", "--bits", "16,32", "--references", "pq", "--iters", "6",
                     "--quiet", "--json", str(js), "--csv", str(cs)])
    assert (code, capsys.readouterr().err.strip()) == expected("signal during a sweep", 1)
    rows = json.loads(js.read_text())
    assert len(rows) == 1 and rows[0]["method"] == "pq" and rows[0]["stopped"] is True
    assert len(cs.read_text().splitlines()) == 2  # header and the one row


@pytest.mark.parametrize("when", ["training", "adding the base"])
def test_a_signal_during_an_export_writes_no_index(tmp_path, signal_at_step, monkeypatch, capsys, when):
    from explorer.commands import export as export_command
    if when == "training":
        signal_at_step(signal.SIGHUP)
    else:
        add = export_command.add_in_batches

        def add_with_signal(index, base, batch, progress):
            def progress_then_signal(done, total):
                signal.raise_signal(signal.SIGHUP)
                progress(done, total)
            return add(index, base, batch, progress_then_signal)
        monkeypatch.setattr(export_command, "add_in_batches", add_with_signal)
    out = tmp_path / "x.faissindex"
    code = cli.main(["export", "--quiet", "-M", "8", "-K", "16", "--iters", "5", "--add-batch", "200", "--index", str(out)])
    case = "signal during an export's training" if when == "training" else "signal while an export adds the base"
    assert (code, capsys.readouterr().err.strip()) == expected(case, 0)
    assert not out.exists() and not list(tmp_path.iterdir())
