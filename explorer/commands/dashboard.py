"""``pqx dashboard``: serve the live dashboard (the tour notebook) as a web app with Voila.

Voila runs the notebook in a fresh kernel and shows only its outputs (no code cells); with
progressive rendering each cell's output appears as soon as it has run. The page URL is printed.
Nothing here imports Jupyter: Voila runs in a subprocess.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..errors import InvalidParameter

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


def add_arguments(p):
    p.add_argument("--port", type=int, default=8866, help="port to serve on (default 8866)")
    p.add_argument("--ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--notebook", default=str(TOUR), help="notebook to serve (default: the tour, notebooks/00_tour.ipynb)")
    p.add_argument("--browser", action="store_true", help="also open the page in a web browser")


def voila_command(notebook: str | os.PathLike, port: int, ip: str = "127.0.0.1", browser: bool = False) -> list[str]:
    """The Voila command line serving ``notebook`` on ``ip:port``, code cells hidden, progressive rendering."""
    cmd = [sys.executable, "-m", "voila", str(notebook), f"--port={port}", f"--Voila.ip={ip}",
           "--strip_sources=True", "--progressive_rendering=True", "--show_tracebacks=True"]
    if not browser:
        cmd.append("--no-browser")
    return cmd


def run(args) -> int:
    notebook = Path(args.notebook)
    if not notebook.is_file():
        raise InvalidParameter(f"--notebook {notebook} does not exist; pass the path of a .ipynb file "
                               "(the tour is notebooks/00_tour.ipynb of the source checkout, and "
                               f"{SHARED_NOTEBOOKS / '00_tour.ipynb'} under the environment after pip install)")
    if not 0 < args.port < 65536:
        raise InvalidParameter(f"--port {args.port} is not a TCP port; use 1-65535")
    env = dict(os.environ)
    # The notebook imports `widgets` and `explorer`: make this checkout importable by its kernel.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    print(f"PQ Explorer dashboard: http://{args.ip}:{args.port}/  (Ctrl-C to stop)", flush=True)
    try:
        return subprocess.call(voila_command(notebook, args.port, args.ip, args.browser), env=env)
    except KeyboardInterrupt:
        return 0
