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
LIVE_ITERATIONS = 1000  # the live run of start_and_watch, long enough that Stop lands while it trains
STATUS_JS = "() => { const s = document.querySelector('.pqx-status'); return s ? s.innerText : ''; }"


def record_console(page, path) -> None:
    """Append the page's console messages and uncaught errors to ``path`` (a test artifact): when
    a live view stops moving, what the front end said is the first thing to read."""
    def write(line: str) -> None:
        with open(path, "a") as fh:
            fh.write(line.rstrip() + "\n")

    page.on("console", lambda msg: write(f"[{msg.type}] {msg.text}"))
    page.on("pageerror", lambda err: write(f"[pageerror] {err}"))


KERNEL_EXEC_JS = """async (code) => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  if (!kernel) return '(no JupyterLab kernel on this page)';
  const out = [];
  const future = kernel.requestExecute({code, silent: false, store_history: false});
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === 'stream') out.push(msg.content.text);
    if (msg.header.msg_type === 'error') out.push(msg.content.ename + ': ' + msg.content.evalue);
  };
  await future.done;
  return out.join('');
}"""
# What the kernel's dashboard (the tour's ``dash``) holds, to set beside what the page shows.
DASHBOARD_STATE_PY = """
import threading
_f = dash.usage.figure
print('kernel: bars sum', sum(_f.data[0].y), 'first', list(_f.data[0].y[:8]))
print('kernel: edit ids trace/layout', _f._last_trace_edit_id, _f._last_layout_edit_id,
      'in process', _f._trace_edit_in_process, _f._layout_edit_in_process, 'waiting', len(_f._waiting_edit_callbacks))
print('kernel: redraws', dash.run._watch.redraws, 'last step', getattr(dash._last_step, 'step', None))
print('kernel: threads', sorted(t.name for t in threading.enumerate()))
"""
PAGE_STATE_JS = """() => {
  const plots = document.querySelectorAll('.pqx-usage .js-plotly-plot');
  const b = plots.length ? plots[0].data[0].y : null;
  return 'page: usage plots ' + plots.length + ', bars sum ' + (b ? Array.from(b).reduce((x, y) => x + y, 0) : null)
         + ', first ' + (b ? JSON.stringify(Array.from(b).slice(0, 8)) : null)
         + ', status ' + JSON.stringify((document.querySelector('.pqx-status') || {}).innerText);
}"""


def live_state(page) -> str:
    """The page's usage bars and status beside the kernel's figure, edit ids, redraw count and
    threads (JupyterLab only: the kernel is asked through the page's own kernel connection)."""
    lines = [page.evaluate(PAGE_STATE_JS)]
    try:
        lines.append(page.evaluate(KERNEL_EXEC_JS, DASHBOARD_STATE_PY))
    except Exception as exc:  # Voila has no jupyterapp; a page that is gone answers nothing
        lines.append(f"(kernel not asked: {exc})")
    return "\n".join(lines)


def run_notebook_in_lab(page, url: str, token: str, notebook: str) -> None:
    """Open ``notebook`` in JupyterLab, wait for its kernel and run all its cells (JupyterLab's own command)."""
    page.goto(f"{url}/lab/tree/{notebook}?token={token}")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.sessionContext"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel", timeout=60_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


def bars(page):
    return page.evaluate(BARS_JS)


def status(page) -> str:
    return page.evaluate(STATUS_JS)


def wait_status(page, text: str, timeout_ms: int) -> str:
    page.wait_for_function(f"() => ({STATUS_JS})().includes({json.dumps(text)})", timeout=timeout_ms)
    return status(page)


def wait_bars_change(page, previous, timeout_ms: int):
    """Wait for a complete histogram (same length and total as ``previous``) that differs from it
    and return that histogram, as the check saw it: read again later, a run from the same seed may
    already have settled back onto ``previous`` (k-means on digits does within ~25 steps)."""
    check = f"""(prev) => {{
      const b = ({BARS_JS})();
      const sum = (a) => a.reduce((x, y) => x + y, 0);
      return b !== null && b.length === prev.length && sum(b) === sum(prev)
             && JSON.stringify(b) !== JSON.stringify(prev) ? b : null;
    }}"""
    return page.wait_for_function(check, arg=previous, timeout=timeout_ms).json_value()


def scroll_to(page, selector: str) -> None:
    """Bring ``selector`` into view for a screenshot without Playwright's wait for the element to
    be stable: a view redrawn by a live run never is (it timed out after 10 s in a Voila run here)."""
    page.evaluate("(s) => document.querySelector(s).scrollIntoView({block: 'start'})", selector)


def wait_pictures(page, n: int, timeout_ms: int) -> int:
    """Wait until ``n`` static pictures (the tour's snapshots, its last outputs) are shown: the
    notebook has run to its end and the kernel is free to handle Start; return their count."""
    js = "() => document.querySelectorAll('.jp-RenderedImage img').length"
    page.wait_for_function(f"(n) => ({js})() >= n", arg=n, timeout=timeout_ms)
    return page.evaluate(js)


def dashboard_picture(page, path, height: int = 1150) -> None:
    """Screenshot the top of the dashboard (controls, usage, collapse and loss views) once its bars
    are drawn: README's picture is test_voila's ``voila-dashboard.png``, copied to docs/dashboard.png."""
    page.wait_for_function(f"() => ({BARS_JS})() !== null", timeout=30_000)
    page.locator(".pqx-dashboard").scroll_into_view_if_needed()
    box = page.locator(".pqx-dashboard").bounding_box()
    page.screenshot(path=str(path), full_page=True,
                    clip={"x": box["x"], "y": box["y"], "width": box["width"], "height": min(box["height"], height)})


def start_and_watch(page, artifacts, name: str) -> None:
    """Ask for a long run, press Start, see the bars change, press Stop, see training stop.

    Screenshots go to ``artifacts``. The run is made long (1,000 paced iterations, ~5 minutes) by
    typing in the iterations field as a person would, so Stop always lands while it is training.
    The waits are generous: what is tested is that the bars move and Stop stops them, not how
    fast. Before live redraws waited for the page (``View.page_behind``), software-rendered
    Chromium here fell ever further behind the kernel's updates: 12 s to the first moved bars,
    38 s to a later step, 45 s from Stop to the final line, and in some runs no moved bars within
    60 s. With it: 1.2 s, 6 s and 0.6 s (JupyterLab, idle 2-core machine).
    """
    steps = page.locator(".pqx-dashboard .widget-text", has_text="iterations").locator("input")
    steps.fill(str(LIVE_ITERATIONS))
    steps.press("Enter")
    before = bars(page)  # the notebook's own finished fit, read before Start can redraw it
    assert before and len(before) == 256 and sum(before) > 0, f"no usage bars drawn: {before!r}"
    page.locator(".pqx-dashboard button", has_text="Start").click()
    wait_status(page, "Training pq: step", 60_000)
    assert f"/{LIVE_ITERATIONS}" in status(page)
    try:
        first = wait_bars_change(page, before, 60_000)  # the live run's first drawn step
    except Exception as exc:
        state = live_state(page)
        (artifacts / f"{name}-frozen-state.txt").write_text(state)
        raise AssertionError(f"the live bars did not move in 60 s:\n{state}") from exc
    # the same training vectors, moved between codewords
    assert first != before and sum(first) == sum(before), (sum(first), sum(before), status(page))
    # ...and training goes on live: a later step is reported (k-means on digits settles within
    # ~20 steps, after which the bars may no longer move, so a second bar change is not required)
    drawn = int(status(page).split("step ")[1].split("/")[0])
    page.wait_for_function(f"() => {{ const t = ({STATUS_JS})(); const m = t.match(/step (\\d+)\\//); "
                           f"return m && parseInt(m[1]) > {drawn}; }}", timeout=60_000)
    scroll_to(page, ".pqx-usage")
    page.screenshot(path=str(artifacts / f"{name}-live.png"), full_page=False)

    page.locator(".pqx-dashboard button", has_text="Stop").click()
    text = wait_status(page, "The model is dash.model", 90_000)  # final line, after recall is measured
    assert text.startswith("Stopped at step ") and int(text.split()[3]) < LIVE_ITERATIONS, text
    stopped = bars(page)
    page.wait_for_timeout(1500)  # several paced steps' worth of time: nothing may move now
    assert bars(page) == stopped
    assert status(page) == text
    page.screenshot(path=str(artifacts / f"{name}-stopped.png"), full_page=True)
