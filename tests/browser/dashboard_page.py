"""Reading and driving a rendered dashboard in a Playwright page (JupyterLab or Voila)."""
from __future__ import annotations

import json

# First usage histogram's bar heights (plotly keeps trace data on the graph div: gd.data).
BARS_JS = """() => {
  const gd = document.querySelector('.pqx-usage .js-plotly-plot');
  if (!gd || !gd.data || !gd.data.length) return null;
  const y = gd.data[0].y;
  return y ? Array.from(y) : null;
}"""
STATUS_JS = "() => { const s = document.querySelector('.pqx-status'); return s ? s.innerText : ''; }"


def bars(page):
    return page.evaluate(BARS_JS)


def status(page) -> str:
    return page.evaluate(STATUS_JS)


def wait_status(page, text: str, timeout_ms: int) -> str:
    page.wait_for_function(f"() => ({STATUS_JS})().includes({json.dumps(text)})", timeout=timeout_ms)
    return status(page)


def wait_bars_change(page, previous, timeout_ms: int):
    page.wait_for_function(f"(prev) => JSON.stringify(({BARS_JS})()) !== prev", arg=json.dumps(previous),
                           timeout=timeout_ms)
    return bars(page)


def start_and_watch(page, artifacts, name: str) -> None:
    """Press Start, see the bars change, press Stop, see training stop; screenshots on the way."""
    page.locator(".pqx-dashboard button", has_text="Start").click()
    wait_status(page, "step", 20_000)  # the live run has drawn at least one step
    first = bars(page)
    assert first and len(first) == 256 and sum(first) > 0, f"no usage bars drawn: {first!r}"
    second = wait_bars_change(page, first, 15_000)
    assert second != first and sum(second) == sum(first)  # same training vectors, moved between codewords
    page.locator(".pqx-usage").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / f"{name}-live.png"), full_page=False)

    page.locator(".pqx-dashboard button", has_text="Stop").click()
    text = wait_status(page, "Stopped at step", 30_000)
    stopped = bars(page)
    page.wait_for_timeout(1500)  # several paced steps' worth of time: nothing may move now
    assert bars(page) == stopped
    assert status(page) == text
    page.screenshot(path=str(artifacts / f"{name}-stopped.png"), full_page=True)
