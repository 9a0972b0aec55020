"""The tour notebook in a real JupyterLab: run all cells, press Start, watch bars move, Stop."""
import pytest
from dashboard_page import run_notebook_in_lab, start_and_watch, wait_pictures, wait_status


@pytest.mark.xfail(strict=False, reason="known, unresolved: in today's JupyterLab the usage figure of a run "
                   "started by the Start button often stops updating in the page (status line updates, plotly "
                   "FigureWidget bars do not; it failed three of six runs here); main at b448dec failed it on this "
                   "machine too. "
                   "Voila's live Start/Stop test covers the live path meanwhile")
def test_tour_in_jupyterlab_trains_live_and_stops(browser, lab, artifacts):
    url, token, server = lab
    page = browser.new_page(viewport={"width": 1300, "height": 2600})
    run_notebook_in_lab(page, url, token, "00_tour.ipynb")
    wait_status(page, "Finished 25 steps", 60_000)  # the notebook's own blocking fit ran
    wait_pictures(page, 5, 120_000)  # ...and its static pictures, the last cells: the kernel is idle
    page.screenshot(path=str(artifacts / "jupyterlab-after-run-all.png"))
    start_and_watch(page, artifacts, "jupyterlab")
