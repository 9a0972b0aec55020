"""The tour notebook in a real JupyterLab: run all cells, press Start, watch bars move, Stop."""
from dashboard_page import record_console, run_notebook_in_lab, start_and_watch, wait_pictures, wait_status


def test_tour_in_jupyterlab_trains_live_and_stops(browser, lab, artifacts):
    url, token, server = lab
    page = browser.new_page(viewport={"width": 1300, "height": 2600})
    (artifacts / "jupyterlab-console.txt").unlink(missing_ok=True)
    record_console(page, artifacts / "jupyterlab-console.txt")
    run_notebook_in_lab(page, url, token, "00_tour.ipynb")
    wait_status(page, "Finished 25 steps", 60_000)  # the notebook's own blocking fit ran
    wait_pictures(page, 5, 120_000)  # ...and its static pictures, the last cells: the kernel is idle
    page.screenshot(path=str(artifacts / "jupyterlab-after-run-all.png"))
    start_and_watch(page, artifacts, "jupyterlab")
