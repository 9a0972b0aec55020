"""Execute notebooks in place, as committed: ``python .ci/execute_notebook.py notebooks/00_tour.ipynb ...``

Runs each notebook top to bottom in a fresh kernel (this checkout first on PYTHONPATH), keeps the
outputs (static pictures included), and drops the saved widget state (``metadata.widgets``: tens
of MB of model state that no reader needs; the widget-view outputs stay, Jupyter redraws them when
the notebook runs). Prints each notebook's run time and size; exits 1 on the first failing cell.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def execute(path: Path, timeout: int = 600) -> None:
    nb = nbformat.read(path, as_version=4)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    start = time.monotonic()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    print(f"{path}: {time.monotonic() - start:.0f} s, {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        execute(Path(arg))
