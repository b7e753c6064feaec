"""Open a local HTML file in headless Chromium (Debian's, driven by playwright; flags from MACHINE-NOTES) with
every request that is not file: or data: refused and recorded, and report what was drawn."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# per plot div: its id and how many plotly SVG roots and traces it drew
PLOTS_DRAWN = """() => Array.from(document.querySelectorAll('div.plot')).map(d => ({
  id: d.id, svgs: d.querySelectorAll('.main-svg').length,
  traces: d.querySelectorAll('.trace, .barlayer .point, .scatterlayer .trace').length}))"""


@dataclass
class Opened:
    plots: list[dict[str, Any]]
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    text: str = ""
    svg_text: str = ""
    injected: int = 0
    summary: str = ""
    drift_rows: list[str] = field(default_factory=list)
    drawn: int = -1


def _playwright_available() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return True


def need_browser() -> None:
    if not os.path.exists(CHROMIUM) or not _playwright_available():
        if os.environ.get("CI"):
            pytest.fail("chromium and playwright are needed here: .ci/run installs them")
        pytest.skip("needs Debian's chromium and the playwright package")


@contextmanager
def browser() -> Iterator[Any]:
    need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def open_page(chromium: Any, path: Path, *, injected_selector: str = "[data-injected]") -> Opened:
    """Load ``path``, wait until the page says its plots are drawn (60 s liveness), and collect."""
    from playwright.sync_api import Route

    opened = Opened(plots=[])

    def only_local(route: Route) -> None:
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            opened.refused.append(route.request.url)
            route.abort()

    context = chromium.new_context()
    try:
        context.route("**/*", only_local)
        page = context.new_page()
        page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: opened.errors.append(str(e)))
        page.on("requestfailed", lambda r: opened.refused.append(r.url) if r.url not in opened.refused else None)

        def on_dialog(dialog: Any) -> None:
            opened.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.goto(path.resolve().as_uri())
        page.wait_for_selector("html[data-drawn]", state="attached", timeout=60_000)  # liveness, not speed
        opened.drawn = int(page.get_attribute("html", "data-drawn") or -1)
        opened.plots = page.evaluate(PLOTS_DRAWN)
        opened.text = page.inner_text("body")
        opened.summary = page.inner_text("#summary") if page.query_selector("#summary") else ""
        opened.drift_rows = page.eval_on_selector_all("#drift td.name", "cells => cells.map(c => c.innerText)")
        opened.svg_text = page.evaluate(
            "() => Array.from(document.querySelectorAll('div.plot svg text')).map(t => t.textContent).join('\\n')")
        opened.injected = page.evaluate(f"() => document.querySelectorAll({injected_selector!r}).length")
    finally:
        context.close()
    return opened
