"""Notebooks that keep static pictures (``view.snapshot()``) need Chromium for kaleido. Where none
can be had (README's test command installs it where it can), nbval skips them and says why, as
the browser tests do; under ``PQX_REQUIRE_BROWSER=1`` (.ci/run) they run, and fail without it."""
import os
import shutil
from pathlib import Path

import pytest

from widgets._view import DEFAULT_CHROMIUM


def chromium() -> str | None:
    """The browser kaleido would drive: BROWSER_PATH when set, else Debian's, else chromium on PATH."""
    if os.environ.get("BROWSER_PATH"):
        return os.environ["BROWSER_PATH"] if os.path.exists(os.environ["BROWSER_PATH"]) else None
    return DEFAULT_CHROMIUM if os.path.exists(DEFAULT_CHROMIUM) else shutil.which("chromium")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath))
        if path.suffix == ".ipynb":
            # A notebook's cells run in order in one kernel: under pytest-xdist (README's test
            # command: -n 2 --dist loadgroup) they must all go to the same worker.
            item.add_marker(pytest.mark.xdist_group(path.name))
    if chromium() or os.environ.get("PQX_REQUIRE_BROWSER") == "1":
        return
    for item in items:
        path = Path(str(item.fspath))
        if path.suffix == ".ipynb" and ".snapshot(" in path.read_text():
            item.add_marker(pytest.mark.skip(reason=f"{path.name} draws static pictures with kaleido, which needs "
                                                    f"Chromium: none at {DEFAULT_CHROMIUM} or BROWSER_PATH "
                                                    "(apt-get install chromium)"))
