"""Ctrl-C during ``pqx train``: training stops at the next step, the report of what was trained is
written with ``"interrupted": true``, the checkpoint holds the last step, and the exit code is 130."""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path

from explorer import cli
from explorer.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


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


def test_sigint_stops_training_writes_an_interrupted_report_and_exits_130(tmp_path):
    report, ckpt = tmp_path / "r.json", tmp_path / "ck"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    iters = 1_000_000  # far more than can run before the signal
    proc = subprocess.Popen(
        [sys.executable, "-m", "explorer.cli", "train", "--method", "pq", "--data", "synthetic", "-K", "16",
         "--iters", str(iters), "--json", str(report), "--checkpoint", str(ckpt), "--checkpoint-every", "1000000"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        read_until(proc, b"] step ")  # training is under way: the progress bar has drawn a step
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted by Ctrl-C after step" in err
    assert b"Product quantization on synthetic" in out  # the summary of the partial model
    data = json.loads(report.read_text())
    assert data["interrupted"] is True
    last = data["history"][-1]["step"]
    assert 1 <= last < iters
    assert [h["step"] for h in data["history"]] == list(range(1, last + 1))[-len(data["history"]):]
    assert load_checkpoint(ckpt)["step"] == last  # the checkpoint was saved at the step training stopped
    assert all(sum(row) == data["n_base"] for row in data["usage"])  # a usable model encoded the whole base


def test_uninterrupted_report_says_interrupted_false(tmp_path, capsys):
    assert cli.main(["train", "--method", "pq", "-K", "16", "--iters", "2", "--quiet", "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["interrupted"] is False
