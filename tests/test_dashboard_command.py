"""`pqx dashboard`: the Voila command line it builds, and its one-line errors (serving is tested
in tests/browser/test_voila.py)."""
import sys

import pytest

from explorer import cli
from explorer.commands.dashboard import TOUR, voila_command


def test_voila_serves_the_tour_without_code_progressively_on_the_chosen_port():
    cmd = voila_command(TOUR, 9123)
    assert cmd[:3] == [sys.executable, "-m", "voila"] and cmd[3] == str(TOUR)
    for flag in ("--port=9123", "--Voila.ip=127.0.0.1", "--strip_sources=True", "--progressive_rendering=True",
                 "--no-browser"):
        assert flag in cmd
    assert "--no-browser" not in voila_command(TOUR, 9123, browser=True)
    assert TOUR.is_file()


def test_the_library_stays_free_of_ui_imports():
    import subprocess
    code = ("import sys, explorer, explorer.cli, explorer.commands.dashboard, explorer.methods as m; m.available(); "
            "bad = [x for x in ('ipywidgets', 'plotly', 'IPython', 'jupyter_server') if x in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_off_loopback_the_server_needs_a_token_and_hides_tracebacks():
    from explorer.commands.dashboard import is_loopback
    public = voila_command(TOUR, 9123, "0.0.0.0")
    assert "--Voila.auto_token=True" in public and "--show_tracebacks=False" in public
    local = voila_command(TOUR, 9123, "127.0.0.1")
    assert "--Voila.auto_token=True" not in local and "--show_tracebacks=True" in local
    assert any(a.startswith("--Voila.config_file_paths=") for a in public)  # the kernel cap (widgets/voila.py)
    assert [is_loopback(ip) for ip in ("127.0.0.1", "127.1.2.3", "::1", "localhost", "0.0.0.0", "10.0.0.5", "::",
                                       "example.org")] == [True, True, True, True, False, False, False, False]


# The dashboard rows of the bad-input catalogue (docs/reliability.md): case: (input, exit code, message).
DASHBOARD_CASES = {
    "dashboard: no kernels allowed": ("pqx dashboard --max-kernels 0", 2, "--max-kernels=0 is out of range"),
    "dashboard: short token": ("pqx dashboard --token short", 2, "--token is shorter than 8 characters"),
    "dashboard: missing notebook": ("pqx dashboard --notebook nope.ipynb", 2, "does not exist"),
    "dashboard: off loopback without the token": ("pqx dashboard --ip 0.0.0.0, page opened without ?token=", "—",
                                                  "the login form (HTTP redirect to /login)"),
    "dashboard: a page beyond the kernel cap": ("pqx dashboard --max-kernels N, page N+1", "—", "HTTP 503"),
    "dashboard: SIGTERM": ("pqx dashboard (kill -TERM)", 143, "Voila shuts its kernels down and stops with pqx"),
}


@pytest.mark.parametrize("case", [c for c, row in DASHBOARD_CASES.items() if row[1] == 2])
def test_bad_dashboard_options_are_one_line_and_exit_code_2(capsys, tmp_path, case):
    command, code, fragment = DASHBOARD_CASES[case]
    argv = [a.replace("nope.ipynb", str(tmp_path / "nope.ipynb")) for a in command.split()[2:]]
    assert cli.main(["dashboard", *argv]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            return r.status, r.geturl(), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, url, e.read().decode()


def test_served_off_loopback_it_asks_a_token_caps_kernels_and_goes_down_with_sigterm(tmp_path):
    """A real `pqx dashboard --ip 0.0.0.0`: without the printed token the page is the login form;
    with it a page is served; a page beyond --max-kernels gets 503; SIGTERM to pqx stops Voila."""
    import json
    import os
    import signal
    import socket
    import subprocess
    import time
    from pathlib import Path
    nb = tmp_path / "tiny.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# tiny"]}],
                              "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                          "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}))
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("JUPYTER_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "explorer.cli", "dashboard", "--ip", "0.0.0.0", f"--port={port}",
                             f"--notebook={nb}", "--max-kernels", "1"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=(tmp_path / "voila.log").open("w"), text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"PQ Explorer dashboard: http://0.0.0.0:{port}/?token="), line
        token = line.split("?token=")[1].split()[0]
        assert len(token) >= 32
        deadline = time.monotonic() + 180
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "Voila did not start"
                time.sleep(0.5)
        base = f"http://127.0.0.1:{port}/"
        status, final_url, _ = _get(base)
        assert "/login" in final_url  # no token: the login form, not the notebook
        status, final_url, body = _get(base + "?token=" + token)
        assert status == 200 and "/login" not in final_url and "voila" in body.lower()
        assert _get(base + "?token=" + token)[0] == 503  # the second page exceeds --max-kernels 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == DASHBOARD_CASES["dashboard: SIGTERM"][1]
        # Voila was asked to stop (its clean shutdown, kernels included), not killed after the grace period
        assert "Handle signal 15" in (tmp_path / "voila.log").read_text()
        with pytest.raises(OSError):  # Voila went down with pqx
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if proc.poll() is None:
            proc.kill()
