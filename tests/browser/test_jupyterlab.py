"""The tour notebook in a real JupyterLab: run all cells, press Start, watch bars move, Stop."""
from dashboard_page import start_and_watch, wait_pictures, wait_status


def test_tour_in_jupyterlab_trains_live_and_stops(browser, lab, artifacts):
    url, token, server = lab
    page = browser.new_page(viewport={"width": 1300, "height": 2600})
    page.goto(f"{url}/lab/tree/00_tour.ipynb?token={token}")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.sessionContext"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel", timeout=60_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    wait_status(page, "Finished 25 steps", 60_000)  # the notebook's own blocking fit ran
    wait_pictures(page, 5, 120_000)  # ...and its static pictures, the last cells: the kernel is idle
    page.screenshot(path=str(artifacts / "jupyterlab-after-run-all.png"))
    start_and_watch(page, artifacts, "jupyterlab")
