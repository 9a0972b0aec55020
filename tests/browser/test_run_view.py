"""A RunView in JupyterLab follows a `pqx train --events` run in another process: its bars move
while that process trains."""
import json
import subprocess
import sys

from conftest import server_env
from dashboard_page import BARS_JS, bars, run_notebook_in_lab, scroll_to, wait_bars_change, wait_status

NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
               "source": ["from widgets import RunView\n",
                          "view = RunView('run.jsonl', n_subspaces=8, n_codewords=256, interval=0.2, poll=0.1, timeout=600)\n",
                          "view"]}],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}


def test_run_view_follows_a_training_in_another_process(browser, lab, artifacts, tmp_path):
    url, token, _ = lab
    root = tmp_path / "lab"
    (root / "follow.ipynb").write_text(json.dumps(NOTEBOOK))
    page = browser.new_page(viewport={"width": 1300, "height": 1800})
    run_notebook_in_lab(page, url, token, "follow.ipynb")
    wait_status(page, "Following run.jsonl", 60_000)  # the view exists and waits for the file
    trainer = subprocess.Popen([sys.executable, "-m", "explorer.cli", "train", "--method", "pq", "--data", "synthetic",
                                "-M", "8", "-K", "256", "--iters", "300", "--quiet", "--events", str(root / "run.jsonl")],
                               cwd=root, env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_status(page, "step ", 60_000)
        page.wait_for_function(f"() => {{ const b = ({BARS_JS})(); return b && b.length === 256 && b.some(v => v > 0); }}",
                               timeout=60_000)
        first = bars(page)
        assert first and len(first) == 256 and sum(first) > 0, first
        second = wait_bars_change(page, first, 60_000)  # (k-means settles later: the bars then stop moving)
        assert trainer.poll() is None, "the other process must still be training while the bars move"
        assert sum(second) == sum(first)  # the same training vectors, moved between codewords
        scroll_to(page, ".pqx-usage")
        page.screenshot(path=str(artifacts / "jupyterlab-run-view-following.png"))
    finally:
        trainer.kill()
        trainer.communicate(timeout=30)
