"""``pqx dashboard``: serve the live dashboard (the tour notebook) as a web app with Voila.

Voila runs the notebook in a fresh kernel and shows only its outputs (no code cells); with
progressive rendering each cell's output appears as soon as it has run. The page URL is printed.
Nothing here imports Jupyter: Voila runs in a subprocess.

Secure by default off this machine, as Jupyter is:

- ``--ip`` other than loopback (127.0.0.0/8, ::1, localhost): the page asks for a token,
  generated (``secrets.token_urlsafe``) unless ``--token`` gives one, and printed in the URL;
  it reaches Voila through the environment (``JUPYTER_TOKEN``), not the command line that
  other users of the machine can read in ``ps``. Server tracebacks are not sent to viewers
  (they show paths and code); on loopback they are, for the person developing.
- At most ``--max-kernels`` kernels (default 4) run at once, one per open page; beyond that a
  page gets HTTP 503, and kernels idle for 10 minutes are culled (``widgets/voila.py``, the
  Voila config file this passes).
- SIGTERM, SIGHUP or SIGINT to ``pqx dashboard`` is passed on to Voila, which shuts its kernels
  down; pqx waits for it (then kills it after 10 s) and exits 128 + the signal number. On Linux
  Voila also gets SIGTERM if pqx itself is killed outright (``PR_SET_PDEATHSIG``).
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import InvalidParameter
from ..validation import check_int
from ._common import STOP_SIGNALS

HELP = "serve the live dashboard as a web app (Voila, no code shown) and print its URL"

ROOT = Path(__file__).resolve().parents[2]
SHARED_NOTEBOOKS = Path("share") / "pq-explorer" / "notebooks"  # where the wheel installs them (pyproject.toml)


def tour_notebook() -> Path:
    """Return the tour notebook's path: the source checkout's, else the one a wheel installed under
    ``<prefix>/share/pq-explorer/notebooks`` (the environment's prefix, or the user base of --user)."""
    import site
    import sysconfig

    candidates = [ROOT / "notebooks", Path(sysconfig.get_path("data")) / SHARED_NOTEBOOKS,
                  Path(sys.prefix) / SHARED_NOTEBOOKS, Path(site.getuserbase()) / SHARED_NOTEBOOKS]
    for folder in candidates:
        if (folder / "00_tour.ipynb").is_file():
            return folder / "00_tour.ipynb"
    return candidates[0] / "00_tour.ipynb"  # run() names it in its error


TOUR = tour_notebook()
VOILA_CONFIG_DIR = ROOT / "widgets"  # holds voila.py, the kernel cap
STOP_WAIT_S = 10.0


def add_arguments(p):
    p.add_argument("--port", type=int, default=8866, help="port to serve on (default 8866)")
    p.add_argument("--ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only; "
                   "any other address requires a token)")
    p.add_argument("--token", default=None, help="token viewers must give off loopback (default: generated and printed)")
    p.add_argument("--max-kernels", type=int, default=4, metavar="N",
                   help="at most N pages (kernels) served at once (default 4); more get HTTP 503")
    p.add_argument("--notebook", default=str(TOUR), help="notebook to serve (default: the tour, notebooks/00_tour.ipynb)")
    p.add_argument("--browser", action="store_true", help="also open the page in a web browser")


def is_loopback(ip: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1 and "localhost"."""
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def voila_command(notebook: str | os.PathLike, port: int, ip: str = "127.0.0.1", browser: bool = False, *,
                  token: bool | None = None) -> list[str]:
    """The Voila command line serving ``notebook`` on ``ip:port``, code cells hidden, progressive
    rendering, the kernel cap of ``widgets/voila.py``; with ``token`` (default: off loopback) the
    token read from ``JUPYTER_TOKEN`` is required and tracebacks are hidden from viewers."""
    secure = (not is_loopback(ip)) if token is None else token
    cmd = [sys.executable, "-m", "voila", str(notebook), f"--port={port}", f"--Voila.ip={ip}",
           "--strip_sources=True", "--progressive_rendering=True", f"--show_tracebacks={not secure}",
           f"--Voila.config_file_paths={VOILA_CONFIG_DIR}"]
    if secure:
        cmd.append("--Voila.auto_token=True")  # the identity provider then takes JUPYTER_TOKEN from the environment
    if not browser:
        cmd.append("--no-browser")
    return cmd


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run(args) -> int:
    notebook = Path(args.notebook)
    if not notebook.is_file():
        raise InvalidParameter(f"--notebook {notebook} does not exist; pass the path of a .ipynb file "
                               "(the tour is notebooks/00_tour.ipynb of the source checkout, and "
                               f"{SHARED_NOTEBOOKS / '00_tour.ipynb'} under the environment after pip install)")
    if not 0 < args.port < 65536:
        raise InvalidParameter(f"--port {args.port} is not a TCP port; use 1-65535")
    check_int(args.max_kernels, "--max-kernels", low=1, fix="each open page takes one kernel")
    if args.token is not None and len(args.token) < 8:
        raise InvalidParameter("--token is shorter than 8 characters; give a longer one or leave --token out "
                               "to have one generated")
    secure = not is_loopback(args.ip) or args.token is not None
    token = (args.token or secrets.token_urlsafe(24)) if secure else None
    env = dict(os.environ)
    # The notebook imports `widgets` and `explorer`: make this checkout importable by its kernel.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PQX_DASHBOARD_MAX_KERNELS"] = str(args.max_kernels)
    env.pop("JUPYTER_TOKEN", None)
    if token:
        env["JUPYTER_TOKEN"] = token
    url = f"http://{args.ip}:{args.port}/" + (f"?token={token}" if token else "")
    print(f"PQ Explorer dashboard: {url}  (Ctrl-C to stop)", flush=True)
    return serve(voila_command(notebook, args.port, args.ip, args.browser, token=secure), env)


def serve(cmd: list[str], env: dict) -> int:
    """Run the server ``cmd`` until it exits; a stop signal to us is passed on to it as SIGTERM
    (Voila's clean shutdown: its kernels are shut down too), and we wait for it, killing it after
    ``STOP_WAIT_S``. Returns its exit code, or 128 + the signal we received."""
    received: list[int] = []
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def forward(signum, frame):
        received.append(signum)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    deadline = None
    try:
        while proc.poll() is None:
            if received and deadline is None:
                deadline = time.monotonic() + STOP_WAIT_S
            if deadline is not None and time.monotonic() > deadline:  # asked to stop and still up
                proc.kill()
            try:
                proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return 128 + int(received[0]) if received else proc.returncode
