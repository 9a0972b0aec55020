"""`pqx dashboard`: Voila serves the tour as an app with no code; Start makes the bars move."""
from dashboard_page import dashboard_picture, start_and_watch, wait_pictures, wait_status


def test_pqx_dashboard_serves_the_tour_without_code_and_trains_live(browser, voila, artifacts):
    url, server = voila
    assert f"PQ Explorer dashboard: {url}/" in server.log_path.read_text()  # pqx prints the URL
    page = browser.new_page(viewport={"width": 1300, "height": 2600})
    page.goto(url + "/")
    wait_status(page, "Finished 25 steps", 80_000)
    dashboard_picture(page, artifacts / "voila-dashboard.png")  # the app with the tour's run drawn
    wait_pictures(page, 5, 120_000)  # ...and its static pictures, the last cells: the kernel is idle
    text = page.inner_text("body")
    assert "A tour of PQ Explorer" in text  # the prose is there...
    assert "from widgets import Dashboard" not in text  # ...the code is not
    assert page.locator(".jp-CodeCell .jp-InputArea, .jp-CodeMirrorEditor").count() == 0
    start_and_watch(page, artifacts, "voila")
