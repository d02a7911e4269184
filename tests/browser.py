"""Open an HTML report in Debian's headless Chromium (driven by Playwright) and read back what
the browser actually rendered: the verdict, the tables, and each chart's drawn lines with their
on-screen size. A screenshot is kept as a test artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from migwatch.stack import Stack

CHROMIUM = Path("/usr/bin/chromium")
# the network here is closed: without these Chromium retries Google's hosts at every start
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

_READ = """() => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
  return {
    verdict: document.querySelector('#verdict h1').innerText,
    go: document.querySelector('#verdict').dataset.go,
    requests: performance.getEntriesByType('resource').length,
    tables: [...document.querySelectorAll('#tables tr[data-table]')].map(tr =>
      ({table: tr.dataset.table, cells: [...tr.cells].map(td => td.innerText.trim())})),
    charts: [...document.querySelectorAll('svg[data-chart]')].map(svg => ({
      id: svg.dataset.chart, size: box(svg),
      lines: [...svg.querySelectorAll('g.series')].map(g => ({
        name: g.dataset.series, points: Number(g.dataset.points),
        length: g.querySelector('polyline').getTotalLength(),
        size: box(g.querySelector('polyline'))})),
    })),
  };
}"""


def ensure_chromium(stack: Stack) -> None:
    """Debian's chromium, installed on demand like every other part of the stack."""
    stack.ensure_debian_packages({"chromium": CHROMIUM})


def render(html: Path, screenshot_name: str) -> dict[str, Any]:
    """What Chromium rendered of `html`; the full-page screenshot goes to test-artifacts/."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(html.resolve().as_uri())
            page.wait_for_load_state("load")
            seen: dict[str, Any] = page.evaluate(_READ)
            shot = ARTIFACTS / screenshot_name
            page.screenshot(path=str(shot), full_page=True)
            seen["screenshot"] = shot
        finally:
            browser.close()
    return seen
