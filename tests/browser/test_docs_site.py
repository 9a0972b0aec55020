"""The docs site, built as README's docs command builds it, opened page by page in Chromium:
every docs page and every notebook is there, every picture loads, every internal link resolves."""
from __future__ import annotations

import functools
import http.server
import re
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

from conftest import ROOT, server_env

NOTEBOOKS_WITH_PICTURES = ("00_tour", "01_product_quantization", "02_opq", "03_codebook_collapse", "08_recall_vs_bits")

IMAGES_JS = """() => Array.from(document.images).map(i => ({src: i.src.slice(0, 80), ok: i.complete && i.naturalWidth > 0}))"""
LINKS_JS = """() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"""


def docs_command() -> str:
    """README's docs command: the line after the docs-command marker, inside its bash block."""
    lines = (ROOT / "README.md").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "<!-- docs-command" in line)
    assert lines[at + 1].strip() == "```bash", "README: a ```bash block must follow the docs-command marker"
    return lines[at + 2].strip()


def build(site: Path) -> None:
    """Run README's docs command's build (its last step), into ``site``."""
    command = docs_command()
    build_step = command.split("&&")[-1].strip()
    assert build_step.startswith("python -m mkdocs build"), command
    args = build_step.split()[1:] + ["--site-dir", str(site)]
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=server_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site served over HTTP on a free loopback port: (root folder, base URL)."""
    root = tmp_path_factory.mktemp("site")
    build(root)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def pages_of(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root).parent).replace("\\", "/") for p in root.rglob("index.html")
                  if "assets" not in p.parts and "search" not in p.parts)


def target_file(root: Path, base: str, href: str) -> tuple[Path, str] | None:
    """The file an internal link points at, and its fragment; None for external links."""
    if not href.startswith(base):
        return None
    parts = urllib.parse.urlsplit(href)
    path = root / urllib.parse.unquote(parts.path).lstrip("/")
    if path.is_dir():
        path = path / "index.html"
    return path, parts.fragment


def test_every_docs_page_and_notebook_is_in_the_site(site):
    root, _ = site
    pages = set(pages_of(root))
    docs = ROOT / "docs"
    for md in docs.rglob("*.md"):
        rel = md.relative_to(docs).with_suffix("")
        expected = "." if str(rel) == "index" else str(rel).replace("\\", "/")
        assert expected in pages, f"docs/{md.relative_to(docs)} has no page in the site"
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{nb.stem}" in pages, f"notebook {nb.name} has no page in the site"
    home = (root / "index.html").read_text()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{nb.stem}/" in home, f"{nb.name} is missing from the site's navigation"
    assert "explorer.methods.pq" in (root / "reference" / "methods" / "index.html").read_text()  # the API reference


def test_pictures_load_and_internal_links_resolve_on_every_page(site, browser):
    root, base = site
    page = browser.new_page()
    broken, pictures = [], {}
    for rel in pages_of(root):
        url = base if rel == "." else f"{base}{rel}/"
        page.goto(url, wait_until="load")
        images = page.evaluate(IMAGES_JS)
        broken += [f"{rel}: picture {i['src']} did not load" for i in images if not i["ok"]]
        pictures[rel] = len(images)
        for href in page.evaluate(LINKS_JS):
            target = target_file(root, base, href)
            if target is None:
                continue
            path, fragment = target
            if not path.is_file():
                broken.append(f"{rel}: link {href} leads nowhere")
            elif fragment and path.suffix == ".html" and not re.search(
                    rf'id="{re.escape(urllib.parse.unquote(fragment))}"', path.read_text(errors="replace")):
                broken.append(f"{rel}: link {href} names an anchor its page lacks")
    assert not broken, "\n".join(broken[:30])
    for stem in NOTEBOOKS_WITH_PICTURES:
        assert pictures[f"notebooks/{stem}"] >= 2, f"{stem}: no static pictures of its views in the site"
