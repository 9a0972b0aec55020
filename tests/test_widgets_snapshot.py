"""Static pictures of the views (kaleido + Chromium): what GitHub and nbviewer show of a notebook."""
import os
import struct

import pytest
from IPython.display import SVG, Image

from explorer.errors import InvalidParameter
from widget_streams import stream
from widgets import CollapseView, Dashboard, UsageView
from widgets._view import DEFAULT_CHROMIUM

pytestmark = pytest.mark.skipif(
    not os.path.exists(DEFAULT_CHROMIUM) and not os.environ.get("BROWSER_PATH"),
    reason=f"snapshot needs Chromium at {DEFAULT_CHROMIUM} (apt-get install chromium) or BROWSER_PATH")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    return struct.unpack(">II", data[16:24])  # the IHDR chunk: width, height


def test_png_snapshot_is_a_displayable_image_of_the_requested_size(tmp_path):
    view = UsageView(4, 16).replay(stream("pq", n_iter=4))
    out = tmp_path / "usage.png"
    image = view.snapshot(out, width=640, height=360)
    assert isinstance(image, Image) and image.format == "png"
    assert png_size(image.data) == (640, 360)
    assert out.read_bytes() == image.data
    assert not list(tmp_path.glob(".*tmp*"))  # written through a temporary file, renamed


def test_svg_snapshot_draws_the_views_own_figure():
    events = stream("pq", n_iter=4, n_codewords=256, init="narrow", repair_empty=False)
    view = UsageView(4, 16).replay(events)
    svg = view.snapshot(format="svg")
    assert isinstance(svg, SVG)
    # the picture holds this run's dead-codeword counts, which an unfed view does not have
    titles = [a.text for a in view.figure.layout.annotations]
    assert len(titles) == 4 and all("dead" in t for t in titles)
    for title in titles:
        assert title in svg.data
    empty = UsageView(4, 16).snapshot(format="svg")
    assert not any(title in empty.data for title in titles)


def test_dashboard_snapshot_pictures_every_view_and_writes_them(tmp_path):
    dash = Dashboard("pq", "digits", n_subspaces=4, n_codewords=16, n_iter=3, background_embedding=False,
                     references=False)
    dash.fit(blocking=True)
    shots = dash.snapshot(tmp_path / "shots", width=500, height=300)
    assert list(shots) == list(dash.figures)
    for name, image in shots.items():
        assert png_size(image.data) == (500, 300)
        assert (tmp_path / "shots" / f"{name}.png").read_bytes() == image.data
    # displaying the collection shows one picture per view
    shown = []
    import IPython.display

    real = IPython.display.display
    IPython.display.display = shown.append
    try:
        shots._ipython_display_()
    finally:
        IPython.display.display = real
    assert shown == list(shots.values())


def test_unknown_format_names_the_parameter():
    with pytest.raises(InvalidParameter, match="format='jpg'.*png, svg"):
        CollapseView(4).snapshot(format="jpg")
