"""Fixtures for the browser tests: a free loopback port, Debian's Chromium through Playwright,
and server processes that are always killed at teardown.

Chromium must be at /usr/bin/chromium (``apt-get install chromium``; README's test command runs
``.ci/chromium``, which installs it where it is missing and apt-get may be used). Where it still
cannot be had (no root, no apt-get), these tests skip with that reason, except under
``PQX_REQUIRE_BROWSER=1`` (set by ``.ci/run``): CI must run them, so there a missing browser fails.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    return env


class Server:
    """A subprocess in its own process group, with its output in a log file."""

    def __init__(self, cmd: list[str], cwd: Path, log: Path, env: dict | None = None):
        self.log_path = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env or server_env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_http(self, url: str, timeout: float = 60) -> None:
        """Return once ``url`` answers HTTP 200; fail with the server log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)  # polling a server that is starting up
        pytest.fail(f"server did not answer {url} (exit code {self.proc.poll()}):\n{self.log_path.read_text()[-3000:]}")

    def wait_port(self, port: int, timeout: float = 60) -> None:
        """Return once something listens on 127.0.0.1:port (without requesting a page)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.25)  # polling a server that is starting up
        pytest.fail(f"nothing listens on port {port} (exit code {self.proc.poll()}):\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        self._log.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def require_chromium() -> None:
    """Skip (fail under PQX_REQUIRE_BROWSER=1) when Debian's Chromium is not installed."""
    if os.path.exists(CHROMIUM):
        return
    reason = (f"Chromium not found at {CHROMIUM} and .ci/chromium could not install it here "
              "(it needs apt-get as root or passwordless sudo): run 'apt-get install chromium'")
    if os.environ.get("PQX_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture()
def browser():
    require_chromium()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab on a free port, serving a copy of the notebooks (so runs never touch the committed files)."""
    root = tmp_path / "lab"
    shutil.copytree(ROOT / "notebooks", root)
    port, token = free_port(), "pqx-browser-test"
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # no "get notified about Jupyter news?" toast over the screenshots
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", f"--IdentityProvider.token={token}", "--allow-root",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
           "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    server = Server(cmd, root, tmp_path / "lab.log")
    try:
        server.wait_http(f"http://127.0.0.1:{port}/api/status?token={token}")
        yield f"http://127.0.0.1:{port}", token, server
    finally:
        server.kill()


@pytest.fixture()
def voila(tmp_path):
    """``pqx dashboard`` (Voila serving the tour notebook) on a free port."""
    nb = tmp_path / "00_tour.ipynb"
    shutil.copy(ROOT / "notebooks" / "00_tour.ipynb", nb)
    port = free_port()
    cmd = [sys.executable, "-m", "explorer.cli", "dashboard", f"--port={port}", f"--notebook={nb}"]
    server = Server(cmd, ROOT, tmp_path / "voila.log")
    try:
        server.wait_port(port)
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.kill()
